//! Outgoing email. With `HERD_SMTP_URL` set, messages go out over SMTP (lettre, TLS by
//! rustls); otherwise each message is written as an `.eml` file into an outbox directory,
//! which developers open and tests read back.

use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("could not build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("outbox: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("outbox directory {path}: {source}")]
    Outbox {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A plain-text email to one recipient.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// What some emails carry besides the basics.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// Where replies go (the support desk's signed address of a ticket).
    pub reply_to: Option<String>,
    /// Sent by Herd in answer to an email (a bounce): `Auto-Submitted: auto-replied`, so
    /// that mail systems never answer it in turn.
    pub auto_replied: bool,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

/// Sends email; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.transport {
            Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Outbox(_, p) => format!("outbox {}", p.display()),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &kind)
            .finish()
    }
}

impl Mailer {
    /// SMTP from a URL such as `smtps://user:pass@mail.example.org:465` or
    /// `smtp://mail.example.org:587?tls=required` (lettre's URL format).
    pub fn smtp(url: &str, from: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.build();
        Ok(Self {
            from: from.parse()?,
            transport: Transport::Smtp(transport),
        })
    }

    /// Writes each message as `<uuid>.eml` into `dir`, creating it if needed.
    pub fn outbox(dir: &Path, from: &str) -> Result<Self, MailError> {
        std::fs::create_dir_all(dir).map_err(|source| MailError::Outbox {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            from: from.parse()?,
            transport: Transport::Outbox(AsyncFileTransport::new(dir), dir.to_owned()),
        })
    }

    /// The outbox directory, when mail goes to files.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox(_, p) => Some(p),
            Transport::Smtp(_) => None,
        }
    }

    pub async fn send(&self, email: &Email) -> Result<(), MailError> {
        self.send_with(email, &Headers::default()).await
    }

    /// Sends `email` with `headers`.
    #[tracing::instrument(skip(self, email, headers), fields(subject = %email.subject))]
    pub async fn send_with(&self, email: &Email, headers: &Headers) -> Result<(), MailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(email.to.parse()?)
            .subject(&email.subject)
            .message_id(None)
            .header(ContentType::TEXT_PLAIN);
        if let Some(reply_to) = &headers.reply_to {
            builder = builder.reply_to(reply_to.parse()?);
        }
        if headers.auto_replied {
            builder = builder.raw_header(lettre::message::header::HeaderValue::new(
                lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-replied".to_owned(),
            ));
        }
        let msg = builder.body(email.body.clone())?;
        match &self.transport {
            Transport::Smtp(t) => {
                t.send(msg).await?;
            }
            Transport::Outbox(t, _) => {
                t.send(msg).await?;
            }
        }
        tracing::info!("email sent");
        Ok(())
    }
}

/// Reads the messages of an outbox directory, oldest first, as (recipient, subject, decoded
/// body). For tests and the developer's `herd` tooling.
pub fn read_outbox(dir: &Path) -> std::io::Result<Vec<OutboxMessage>> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    entries.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    entries
        .into_iter()
        .map(|e| std::fs::read_to_string(e.path()).map(|raw| OutboxMessage::parse(&raw)))
        .collect()
}

/// A message read back from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The `Reply-To` address, when there is one.
    pub reply_to: Option<String>,
    /// The `Message-ID`, angle brackets included.
    pub message_id: Option<String>,
    /// The `Auto-Submitted` header, when there is one.
    pub auto_submitted: Option<String>,
}

impl OutboxMessage {
    /// Parses the simple messages Herd writes (plain text, quoted-printable or 7bit body).
    pub fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut to = String::new();
        let mut subject = String::new();
        let (mut reply_to, mut message_id, mut auto_submitted) = (None, None, None);
        let mut qp = false;
        // Long headers are folded onto lines starting with white space: unfold them.
        let head = head.replace("\n ", " ").replace("\n\t", " ");
        for line in head.lines() {
            if let Some(v) = line.strip_prefix("To: ") {
                to = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Reply-To: ") {
                reply_to = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Message-ID: ") {
                message_id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Auto-Submitted: ") {
                auto_submitted = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("Subject: ") {
                subject = v.trim().to_owned();
            } else if line.eq_ignore_ascii_case("Content-Transfer-Encoding: quoted-printable") {
                qp = true;
            }
        }
        let body = if qp { decode_qp(body) } else { body.to_owned() };
        Self {
            to,
            subject,
            body,
            reply_to,
            message_id,
            auto_submitted,
        }
    }

    /// The first `http(s)://` link in the body.
    pub fn first_link(&self) -> Option<&str> {
        let start = self
            .body
            .find("http://")
            .or_else(|| self.body.find("https://"))?;
        let rest = &self.body[start..];
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

fn decode_qp(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_round_trip() {
        let dir = std::env::temp_dir().join(format!("herd-mail-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mailer = Mailer::outbox(&dir, "Herd <noreply@herd.test>").expect("mailer");
        let body = "Hello Élise,\n\nopen https://herd.test/verify/abc=def?x=1 to continue. A long line follows so that the encoder has to wrap it somewhere along the way, which it does at 76.\n";
        mailer
            .send(&Email {
                to: "elise@example.org".into(),
                subject: "Verify".into(),
                body: body.into(),
            })
            .await
            .expect("send");
        let msgs = read_outbox(&dir).expect("read");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].to, "elise@example.org");
        assert_eq!(msgs[0].subject, "Verify");
        assert_eq!(msgs[0].body.trim_end(), body.trim_end());
        assert_eq!(
            msgs[0].first_link(),
            Some("https://herd.test/verify/abc=def?x=1")
        );
        assert_eq!(msgs[0].reply_to, None);
        assert!(msgs[0]
            .message_id
            .as_deref()
            .is_some_and(|m| m.starts_with('<')));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn reply_to_and_auto_submitted_are_written() {
        let dir = std::env::temp_dir().join(format!("herd-mail-headers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mailer = Mailer::outbox(&dir, "Herd <noreply@herd.test>").expect("mailer");
        let email = Email {
            to: "elise@example.org".into(),
            subject: "Re: help".into(),
            body: "Hello".into(),
        };
        let long =
            "support+0193a6f0c4b27e2a9d5f1c3b8e4a7d60.0123456789abcdef0123@support.help.herd.test";
        let headers = Headers {
            reply_to: Some(long.into()),
            auto_replied: true,
        };
        mailer.send_with(&email, &headers).await.expect("send");
        let msgs = read_outbox(&dir).expect("read");
        assert_eq!(msgs[0].reply_to.as_deref(), Some(long));
        assert_eq!(msgs[0].auto_submitted.as_deref(), Some("auto-replied"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_from_address_is_refused() {
        let dir = std::env::temp_dir();
        assert!(Mailer::outbox(&dir, "not an address").is_err());
    }
}
