//! Email into the support desk. The email of an operator's reply carries a signed
//! Reply-To, `support+<ticket>.<mac>@<support domain>` ([`ReplyAddresses`]); the mail
//! server hands what comes back to Herd's inbound endpoint as the raw RFC 822 message,
//! and [`receive`] turns it into a reply on that ticket, or, sent to the plain support
//! address, into a new ticket:
//!
//! - the address's MAC must be right (forged or altered: refused, nothing changes);
//! - quoted text (`>` lines, the "On … wrote:" attribution, forwarded originals) and the
//!   signature are stripped ([`strip_quoted`]);
//! - the sender (From) counts only when the trusted mail server's topmost
//!   `Authentication-Results` proves it ([`authenticate`]); without a trusted server, only
//!   replies to signed reply addresses are taken, never new tickets;
//! - the sender must be a confirmed account that may see the ticket, or, for a new
//!   ticket, a member of exactly one organization; nothing is added otherwise, and only an
//!   authenticated account is told why (a bounce email, at most hourly); anyone else is
//!   refused (422) so the mail server rejects the email;
//! - an email is added once, whatever the mail server retries (its Message-ID is unique);
//! - its attachments pass the same checks as the portal's; refused ones bounce it whole;
//! - automatic mail (out-of-office answers, bounces, lists) is ignored, never answered.

use crate::attachments::{AttachmentStore, Extras, Upload};
use crate::tickets::{self, Member, Opening};
use crate::{SupportError, Who};
use herd_domain::ids::TicketId;
use herd_domain::support::attachment::check_files;
use herd_domain::support::MAX_SUBJECT;
use herd_domain::{Email, UserId};
use herd_jobs::Job;
use herd_store::support_attachments::{self as seen, EMAIL_SEEN};
use herd_store::{orgs, support as store, users, StoreError};
use hmac::{Hmac, Mac};
use mail_parser::{MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::fmt;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Hex digits of the MAC in a reply address (80 bits).
const MAC_HEX: usize = 20;

/// A support address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HERD_SUPPORT_EMAIL {0:?} is not an address like support@help.example.org")]
pub struct BadSupportAddress(pub String);

/// The support desk's addresses: the plain one (new tickets) and each ticket's signed
/// reply address. The key is derived from a secret of Herd's (`HERD_ENCRYPTION_KEY`);
/// its `Debug` never shows it.
#[derive(Clone)]
pub struct ReplyAddresses {
    local: String,
    domain: String,
    key: [u8; 32],
}

impl fmt::Debug for ReplyAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyAddresses")
            .field("support", &self.support_address())
            .finish_non_exhaustive()
    }
}

/// What an address a message was sent to is, for the support desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// The plain support address: a new ticket.
    Support,
    /// A ticket's reply address with the right MAC.
    Ticket(TicketId),
    /// A reply address whose ticket or MAC is wrong.
    Forged,
    /// Another address.
    Elsewhere,
}

impl ReplyAddresses {
    /// The addresses around `support` (`support@help.example.org`), signed with a key
    /// derived from `secret`.
    pub fn new(support: &str, secret: &[u8]) -> Result<Self, BadSupportAddress> {
        let bad = || BadSupportAddress(support.to_owned());
        let email = Email::parse(support).map_err(|_| bad())?;
        let (local, domain) = email.as_str().rsplit_once('@').ok_or_else(bad)?;
        if local.contains('+') {
            return Err(bad());
        }
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).map_err(|_| bad())?;
        mac.update(b"herd:support:reply-to:v1");
        Ok(Self {
            local: local.to_owned(),
            domain: domain.to_owned(),
            key: mac.finalize().into_bytes().into(),
        })
    }

    /// The plain support address.
    pub fn support_address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    fn mac(&self, ticket: TicketId) -> String {
        // A key of 32 bytes always fits HMAC.
        let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(ticket.0.as_simple().to_string().as_bytes());
        let mut hex = hex::encode(mac.finalize().into_bytes());
        hex.truncate(MAC_HEX);
        hex
    }

    /// Ticket `ticket`'s reply address.
    pub fn for_ticket(&self, ticket: TicketId) -> String {
        format!(
            "{}+{}.{}@{}",
            self.local,
            ticket.0.as_simple(),
            self.mac(ticket),
            self.domain
        )
    }

    /// What `address` is (case does not matter: mail systems change it).
    pub fn read(&self, address: &str) -> Recipient {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let address = address.to_ascii_lowercase();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Recipient::Elsewhere;
        };
        if domain != self.domain {
            return Recipient::Elsewhere;
        }
        let (base, tag) = match local.split_once('+') {
            Some((base, tag)) => (base, Some(tag)),
            None => (local, None),
        };
        if base != self.local {
            return Recipient::Elsewhere;
        }
        let Some(tag) = tag else {
            return Recipient::Support;
        };
        let Some((id, mac)) = tag.split_once('.') else {
            return Recipient::Forged;
        };
        let Ok(id) = Uuid::try_parse(id) else {
            return Recipient::Forged;
        };
        let ticket = TicketId(id);
        if constant_time_eq(mac.as_bytes(), self.mac(ticket).as_bytes()) {
            Recipient::Ticket(ticket)
        } else {
            Recipient::Forged
        }
    }
}

/// Whether `a` and `b` are equal, taking as long wherever they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A reply's own text: without the email it answers and without the signature.
///
/// `quoting`: a text only Herd's email to this ticket carries (the path of the ticket's
/// link). What looks like the quote of that email (lines starting with `>`, the
/// attribution before a quote, "On Mon, 7 Dec 2026, Herd wrote:", also over two lines
/// and in a few languages, an Outlook-style original, "-----Original Message-----" or a
/// `From:`/`Sent:` block, a forwarded message) is dropped only when it does carry
/// `quoting`: a customer who pastes an email's headers, forwards a message or quotes a
/// log in their answer keeps it. With `quoting` `None` (a new ticket by email: it answers
/// nothing of Herd's) only the signature goes. The signature: everything from the
/// separator (`-- `) or a "Sent from my …" line on.
pub fn strip_quoted(text: &str, quoting: Option<&str>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // Where Herd's email shows up first: a quote's attribution or original header is
    // the one just before it (a pasted header block further up is the customer's).
    let herd_at = quoting.and_then(|q| lines.iter().position(|l| l.contains(q)));
    let mut end = lines.len();
    let mut boundary = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let attribution = starts_attribution(t)
            && (ends_attribution(t) || (!next.is_empty() && ends_attribution(next)));
        let outlook = t.starts_with("-----Original Message-----")
            || t.starts_with("-----Message d'origine-----")
            || t.starts_with("---------- Forwarded message")
            || (t.len() >= 10 && t.chars().all(|c| c == '_') && next.starts_with("From:"))
            || (t.starts_with("From:")
                && lines[i + 1..].iter().take(3).any(|l| {
                    let l = l.trim_start();
                    l.starts_with("Sent:") || l.starts_with("Date:")
                })
                && lines[..i].iter().any(|l| !l.trim().is_empty()));
        let signature = line.trim_end() == "--"
            || *line == "-- "
            || t.starts_with("Sent from my ")
            || t.starts_with("Get Outlook for ");
        if signature {
            end = i;
            break;
        }
        if (attribution || outlook) && herd_at.is_some_and(|h| i <= h) {
            // One block: a separator line and the header under it count as one.
            boundary = match boundary {
                Some(b) if b + 1 == i => Some(b),
                _ => Some(i),
            };
        }
    }
    if let Some(b) = boundary {
        end = end.min(b);
    }
    let quoted = |l: &&str| l.trim_start().starts_with('>');
    let drop_quoted = quoting.is_some_and(|q| {
        lines[..end]
            .iter()
            .filter(|l| quoted(l))
            .any(|l| l.contains(q))
    });
    let kept: Vec<&str> = lines[..end]
        .iter()
        .filter(|l| !(drop_quoted && quoted(l)))
        .copied()
        .collect();
    kept.join("\n").trim().to_owned()
}

fn starts_attribution(line: &str) -> bool {
    ["On ", "Le ", "Am ", "El ", "Il ", "Op "]
        .iter()
        .any(|p| line.starts_with(p))
}

fn ends_attribution(line: &str) -> bool {
    let l = line.trim_end();
    [
        "wrote:",
        "a écrit :",
        "a écrit:",
        "schrieb:",
        "escribió:",
        "ha scritto:",
        "scrisse:",
        "geschreven:",
    ]
    .iter()
    .any(|e| l.ends_with(e))
}

/// What the inbound endpoint needs.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub replies: &'a ReplyAddresses,
    pub files: &'a AttachmentStore,
    /// Herd's public address, for links in bounces.
    pub base_url: &'a str,
    /// Where the email came from (the mail server), for the audit log.
    pub ip: &'a str,
    /// The authserv-id of the receiving mail server's `Authentication-Results` header
    /// (`HERD_SUPPORT_MAIL_AUTHSERV_ID`). Set, an email acts as its sender only if the
    /// topmost such header shows `dmarc=pass`, or `dkim=pass` for the From domain; unset,
    /// no email is authenticated: only replies to signed reply addresses are taken.
    pub authserv_id: Option<&'a str>,
}

/// What the receiving mail server says of the From address (see [`Inbound::authserv_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderAuth {
    /// The trusted server saw `dmarc=pass`, or an aligned `dkim=pass` (the method).
    Passed(&'static str),
    /// The trusted server's verdict did not pass (or it gave none).
    Failed,
    /// No authserv-id is configured: nothing can be authenticated.
    NotConfigured,
}

impl SenderAuth {
    /// For the audit log.
    pub fn as_str(&self) -> &'static str {
        match self {
            SenderAuth::Passed("dmarc") => "dmarc=pass",
            SenderAuth::Passed(_) => "dkim=pass",
            SenderAuth::Failed => "fail",
            SenderAuth::NotConfigured => "none",
        }
    }
}

/// Removes RFC 5322 comments (nested parentheses) from a header value.
fn without_comments(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Are `d` (a signing domain) and `from` (the From domain) aligned (relaxed: one is the
/// other or a subdomain of it)?
fn aligned(d: &str, from: &str) -> bool {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let from = from.trim_end_matches('.');
    !d.is_empty()
        && d.contains('.')
        && (d == from || from.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{from}")))
}

/// The verdict of the topmost `Authentication-Results` (`values`, topmost first) whose
/// authserv-id is `trusted`, for the From address `from`. Lower ones with the same id may
/// have been written by the sender, so only the first counts.
pub fn authenticate(values: &[&str], trusted: Option<&str>, from: &str) -> SenderAuth {
    let Some(trusted) = trusted.map(str::trim).filter(|t| !t.is_empty()) else {
        return SenderAuth::NotConfigured;
    };
    let from_domain = from.rsplit('@').next().unwrap_or_default();
    let Some(results) = values.iter().map(|v| without_comments(v)).find(|v| {
        v.split(';')
            .next()
            .and_then(|id| id.split_whitespace().next())
            .is_some_and(|id| id.eq_ignore_ascii_case(trusted))
    }) else {
        return SenderAuth::Failed;
    };
    let mut dkim = false;
    for res in results.split(';').skip(1) {
        let mut words = res.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
            continue;
        };
        if !result.eq_ignore_ascii_case("pass") {
            continue;
        }
        let props: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        match method.to_ascii_lowercase().as_str() {
            "dmarc" => {
                let about = props
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("header.from"))
                    .map(|(_, v)| *v);
                if about.is_none_or(|d| d.trim_matches('"').eq_ignore_ascii_case(from_domain)) {
                    return SenderAuth::Passed("dmarc");
                }
            }
            "dkim" => {
                dkim |= props.iter().any(|(k, v)| {
                    let v = v.trim_matches('"');
                    (k.eq_ignore_ascii_case("header.d") && aligned(v, from_domain))
                        || (k.eq_ignore_ascii_case("header.i")
                            && aligned(v.rsplit('@').next().unwrap_or_default(), from_domain))
                });
            }
            _ => {}
        }
    }
    if dkim {
        SenderAuth::Passed("dkim")
    } else {
        SenderAuth::Failed
    }
}

/// What became of an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Added as a reply to the ticket.
    Added(TicketId),
    /// Opened a new ticket.
    Opened(TicketId),
    /// Added before (same Message-ID): nothing changed.
    Duplicate(TicketId),
    /// Not taken; the sender is told why by email (queued).
    Bounced(String),
    /// Automatic mail (out-of-office, delivery reports, lists): dropped, never answered.
    Ignored(&'static str),
}

impl Outcome {
    /// A word for the endpoint's answer and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Added(_) => "added",
            Outcome::Opened(_) => "opened",
            Outcome::Duplicate(_) => "duplicate",
            Outcome::Bounced(_) => "bounced",
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// Why an email is refused outright (the mail server may bounce it; Herd sends nothing).
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("not an email (RFC 822 message)")]
    NotAnEmail,
    #[error("the email has no sender address")]
    NoSender,
    #[error("the email is not addressed to the support desk")]
    NotForSupport,
    /// A reply address whose signature is wrong: forged, or altered in transit.
    #[error("the reply address is not valid (forged or altered)")]
    Forged,
    /// The sender's address is not proven (no passing `Authentication-Results` from the
    /// trusted mail server, or none configured for a new ticket): nothing is added and
    /// nobody is answered.
    /// Not taken, and the sender is not told (not authenticated, or no return path).
    #[error("not taken: {0}")]
    NotTaken(String),
    #[error("the sender is not authenticated (no dmarc=pass or aligned dkim=pass from the trusted mail server)")]
    Unauthenticated,
    #[error(transparent)]
    Support(#[from] SupportError),
}

impl From<StoreError> for InboundError {
    fn from(e: StoreError) -> Self {
        InboundError::Support(e.into())
    }
}

/// The bounce email to an authenticated account whose email was not taken. It does not
/// echo the email's subject, and goes at most once an hour to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceEmail {
    pub to: String,
    pub reason: String,
    /// The bounced email's Message-ID, for the log.
    pub email_message_id: String,
    /// When it was bounced: at most one bounce per address and hour.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: time::OffsetDateTime,
}

impl Job for BounceEmail {
    const KIND: &'static str = "support.bounce_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        let hour = self.requested_at.unix_timestamp().div_euclid(3600);
        Some(format!("support-bounce:{}:{hour}", self.to))
    }
}

impl BounceEmail {
    /// The email the sender gets.
    pub fn email(&self) -> herd_mail::Email {
        herd_mail::Email {
            to: self.to.clone(),
            subject: "Your email to support was not added".to_owned(),
            body: format!(
                "Hello,\n\nYour email to the support desk was not added to any ticket:\n\n{}\n\nNothing was changed. This message was sent automatically; replies to it are not read.\n",
                self.reason
            ),
        }
    }
}

/// A parsed email, as much of it as the support desk reads.
struct Mail {
    from: String,
    from_name: Option<String>,
    subject: String,
    message_id: String,
    /// The addresses it was delivered or written to, envelope first.
    recipients: Vec<String>,
    body: String,
    files: Vec<Upload>,
    /// Inline images left out (a format the desk does not take).
    left_out: usize,
    /// Why it is automatic mail, if it is.
    automatic: Option<&'static str>,
    /// The `Authentication-Results` headers, topmost first.
    auth_results: Vec<String>,
    /// The verdict on them ([`SenderAuth::as_str`]), for the audit log.
    auth: &'static str,
    /// `Return-Path: <>`: nobody to answer.
    null_sender: bool,
}

fn parse(raw: &[u8], envelope_to: Option<&str>) -> Result<Mail, InboundError> {
    let msg = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or(InboundError::NotAnEmail)?;
    let from = msg.from().and_then(|a| a.first());
    let from_address = from
        .and_then(|a| a.address())
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| a.contains('@'))
        .ok_or(InboundError::NoSender)?;
    let from_name = from.and_then(|a| a.name()).map(str::to_owned);
    let mut recipients: Vec<String> = envelope_to.map(str::to_owned).into_iter().collect();
    for name in ["Delivered-To", "X-Original-To", "Envelope-To"] {
        for v in msg.header_values(name) {
            if let Some(t) = v.as_text() {
                recipients.push(t.to_owned());
            }
        }
    }
    for list in msg.to().into_iter().chain(msg.cc()) {
        recipients.extend(list.iter().filter_map(|a| a.address()).map(str::to_owned));
    }
    let message_id = match msg.message_id() {
        Some(id) if !id.trim().is_empty() => format!("<{}>", id.trim()),
        // Without one, the bytes identify it: the same email delivered twice is one.
        _ => format!("<{}@herd.invalid>", hex::encode(Sha256::digest(raw))),
    };
    let header_text = |name: &str| {
        msg.header(name)
            .and_then(|v| v.as_text())
            .map(|s| s.trim().to_ascii_lowercase())
    };
    let null_sender = msg
        .header_raw("Return-Path")
        .is_some_and(|v| v.trim() == "<>");
    let automatic = if header_text("Auto-Submitted").is_some_and(|v| v != "no") {
        Some("auto-submitted")
    } else if header_text("Precedence")
        .is_some_and(|v| matches!(v.as_str(), "bulk" | "junk" | "list"))
    {
        Some("bulk or list mail")
    } else if header_text("Precedence").is_some_and(|v| v == "auto_reply")
        || ["X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"]
            .iter()
            .any(|h| msg.header(*h).is_some())
    {
        Some("an automatic answer")
    } else if null_sender {
        Some("a null return path (a delivery report)")
    } else if msg.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    }) {
        Some("a delivery or read report")
    } else if msg.header("List-Id").is_some() {
        Some("list mail")
    } else if from_address.starts_with("mailer-daemon@") || from_address.starts_with("postmaster@")
    {
        Some("a delivery report")
    } else {
        None
    };
    let auth_results = msg
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Authentication-Results"))
        .filter_map(|h| {
            msg.raw_message()
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
        .collect();
    let body = msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default();
    let mut files = Vec::new();
    let mut left_out = 0;
    for p in msg.attachments() {
        if p.is_message() && p.attachment_name().is_none() {
            continue;
        }
        let ct = p
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_default()
            .to_ascii_lowercase();
        // An S/MIME or OpenPGP signature (or key) is the mail client's, not a file the
        // customer sends: signed mail is common in public bodies.
        if SIGNATURE_PARTS.contains(&ct.as_str()) {
            continue;
        }
        let upload = Upload {
            name: p.attachment_name().unwrap_or("attachment").to_owned(),
            bytes: bytes::Bytes::copy_from_slice(p.contents()),
        };
        // Images inside the text (a signature's logo, often in a format the desk does
        // not take) are kept when they pass the checks, and otherwise left out rather
        // than refusing the email; attached files are checked with the rest.
        let inline = p
            .content_disposition()
            .map_or(p.content_id().is_some(), |d| {
                d.ctype().eq_ignore_ascii_case("inline")
            });
        if inline && check_files(&[(upload.name.as_str(), upload.bytes.as_ref())]).is_err() {
            left_out += 1;
            continue;
        }
        files.push(upload);
    }
    Ok(Mail {
        subject: msg.subject().unwrap_or_default().trim().to_owned(),
        from: from_address,
        from_name,
        message_id,
        recipients,
        body,
        files,
        left_out,
        automatic,
        auth_results,
        auth: SenderAuth::NotConfigured.as_str(),
        null_sender,
    })
}

/// Content types of signature parts, never taken as files.
const SIGNATURE_PARTS: [&str; 4] = [
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-signature",
    "application/pgp-keys",
];

/// Takes an email (`raw`, RFC 822) delivered to the support desk; `envelope_to` is the
/// address the mail server delivered it to, when it says. See the module's doc.
pub async fn receive(
    pool: &PgPool,
    cfg: Inbound<'_>,
    raw: &[u8],
    envelope_to: Option<&str>,
) -> Result<Outcome, InboundError> {
    let mail = parse(raw, envelope_to)?;
    let read: Vec<Recipient> = mail
        .recipients
        .iter()
        .map(|r| cfg.replies.read(r))
        .collect();
    let target = read
        .iter()
        .find_map(|r| match r {
            Recipient::Ticket(t) => Some(Some(*t)),
            _ => None,
        })
        .or_else(|| read.contains(&Recipient::Forged).then_some(None));
    let ticket = match target {
        Some(Some(t)) => Some(t),
        Some(None) => return Err(InboundError::Forged),
        None if read.contains(&Recipient::Support) => None,
        None => return Err(InboundError::NotForSupport),
    };
    if let Some(why) = mail.automatic {
        tracing::info!(why, "automatic email to support ignored");
        return Ok(Outcome::Ignored(why));
    }
    let results: Vec<&str> = mail.auth_results.iter().map(String::as_str).collect();
    let auth = authenticate(&results, cfg.authserv_id, &mail.from);
    match (&auth, ticket) {
        (SenderAuth::Passed(_), _) => {}
        // Without a trusted mail server, only the reply address's MAC says anything: the
        // sender got the ticket's email. A new ticket needs an authenticated sender.
        (SenderAuth::NotConfigured, Some(_)) => {}
        (SenderAuth::NotConfigured, None) | (SenderAuth::Failed, _) => {
            tracing::warn!(
                message_id = %mail.message_id,
                authentication = auth.as_str(),
                "inbound support mail from an unauthenticated sender refused"
            );
            return Err(InboundError::Unauthenticated);
        }
    }
    let mail = Mail {
        auth: auth.as_str(),
        ..mail
    };
    if let Some(t) = seen::email_seen(pool, &mail.message_id).await? {
        return Ok(Outcome::Duplicate(t));
    }
    let outcome = match ticket {
        Some(t) => reply(pool, cfg, &mail, t).await,
        None => open(pool, cfg, &mail).await,
    };
    match outcome {
        Ok(o) => Ok(o),
        // Told only to an authenticated account (never a stranger, never a relay).
        Err(Refused(reason))
            if matches!(auth, SenderAuth::Passed(_))
                && !mail.null_sender
                && known(pool, &mail).await? =>
        {
            bounce(pool, &mail, reason).await
        }
        Err(Refused(reason)) => {
            tracing::info!(reason = %reason, "email to support refused without a bounce");
            Err(InboundError::NotTaken(reason))
        }
        Err(Failed(SupportError::Store(e))) if e.is_conflict_on(EMAIL_SEEN) => {
            // Delivered twice at once: the other delivery added it.
            match seen::email_seen(pool, &mail.message_id).await? {
                Some(t) => Ok(Outcome::Duplicate(t)),
                None => Err(SupportError::Store(e).into()),
            }
        }
        Err(Failed(e)) => Err(e.into()),
    }
}

/// Why an email was not taken: told to its sender, or a failure to retry.
enum NotTaken {
    Refused(String),
    Failed(SupportError),
}
use NotTaken::{Failed, Refused};

impl From<SupportError> for NotTaken {
    fn from(e: SupportError) -> Self {
        match e {
            SupportError::Invalid(list) => Refused(
                list.into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            other => Failed(other),
        }
    }
}

impl From<StoreError> for NotTaken {
    fn from(e: StoreError) -> Self {
        Failed(e.into())
    }
}

/// The confirmed account the email is from.
async fn sender(pool: &PgPool, mail: &Mail) -> Result<Option<users::User>, NotTaken> {
    let Ok(email) = Email::parse(&mail.from) else {
        return Ok(None);
    };
    Ok(users::by_email(pool, &email)
        .await?
        .filter(|u| u.email_verified_at.is_some()))
}

/// Is the sender a confirmed account?
async fn known(pool: &PgPool, mail: &Mail) -> Result<bool, InboundError> {
    match sender(pool, mail).await {
        Ok(user) => Ok(user.is_some()),
        Err(Failed(e)) => Err(e.into()),
        Err(Refused(_)) => Ok(false),
    }
}

/// The text of the email without what it quotes; an email with files only gets a line
/// saying so.
fn text_of(mail: &Mail, quoting: Option<&str>) -> String {
    let text = strip_quoted(&mail.body, quoting);
    let text = if text.is_empty() && !mail.files.is_empty() {
        "(files sent by email)".to_owned()
    } else {
        text
    };
    match mail.left_out {
        0 => text,
        1 => format!("{text}\n\n(An image inside the email, in a format the support desk does not take, was left out.)"),
        n => format!("{text}\n\n({n} images inside the email, in a format the support desk does not take, were left out.)"),
    }
}

async fn reply(
    pool: &PgPool,
    cfg: Inbound<'_>,
    mail: &Mail,
    id: TicketId,
) -> Result<Outcome, NotTaken> {
    let not_allowed = || {
        Refused(format!(
            "{} may not reply to this ticket: replies by email are taken from the address of an account that can see the ticket in the portal.",
            mail.from
        ))
    };
    let Some(user) = sender(pool, mail).await? else {
        return Err(not_allowed());
    };
    let Some(ticket) = store::ticket(pool, id).await? else {
        return Err(not_allowed());
    };
    let membership = orgs::for_user(pool, user.id())
        .await?
        .into_iter()
        .find(|m| m.org.id == ticket.org_id)
        .ok_or_else(not_allowed)?;
    let member = Member {
        org: membership.org.id(),
        role: membership.role,
        who: who(&user, cfg.ip),
    };
    if !member.may_see(&ticket) {
        return Err(not_allowed());
    }
    // The ticket's emails carry its link: what quotes it is the email answered.
    let quoting = format!("/support/{}", ticket.id);
    // An answer to a ticket merged since its email was sent continues on the ticket it
    // went into (merging moves earlier merges along, so there is one step at most) when
    // nobody new would read it there: the same opener, and shared with the organization
    // only if the duplicate was. Otherwise it is refused with where to go, so that what
    // the sender wrote for the duplicate's readers never reaches others.
    let base = cfg.base_url.trim_end_matches('/');
    let (id, ticket) = match ticket.merged_into {
        Some(into) => match store::ticket(pool, TicketId(into)).await? {
            Some(kept)
                if kept.opener_id == ticket.opener_id
                    && (ticket.shared_with_org || !kept.shared_with_org)
                    && member.may_see(&kept) =>
            {
                (kept.id(), kept)
            }
            Some(kept) if member.may_see(&kept) => {
                return Err(Refused(format!(
                    "This ticket was merged into #{} and stays closed. Its readers are not the same as this ticket's, so your answer was not moved there: answer on #{} in the portal, at {base}/o/{}/support/{}",
                    kept.number, kept.number, kept.org_slug, kept.id
                )))
            }
            _ => {
                return Err(Refused(format!(
                    "This ticket was merged into a ticket you cannot see, and stays closed: open a new ticket at {base}/o/{}/support/new if you need more help.",
                    ticket.org_slug
                )))
            }
        },
        None => (id, ticket),
    };
    let mut extras = Extras::files(cfg.files, mail.files.clone());
    extras.email_message_id = Some(&mail.message_id);
    extras.email_authentication = Some(mail.auth);
    tickets::customer_reply_with(pool, member, id, &text_of(mail, Some(&quoting)), extras)
        .await
        .map_err(|e| match e {
            SupportError::NotFound => not_allowed(),
            SupportError::Invalid(list) => Refused(format!(
                "{}\n\nThe ticket is at {}/o/{}/support/{}",
                list.into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
                    .join("\n"),
                cfg.base_url.trim_end_matches('/'),
                ticket.org_slug,
                ticket.id
            )),
            other => Failed(other),
        })?;
    Ok(Outcome::Added(id))
}

fn who<'a>(user: &'a users::User, ip: &'a str) -> Who<'a> {
    Who {
        id: UserId(user.id),
        name: &user.display_name,
        email: &user.email,
        ip,
    }
}

async fn open(pool: &PgPool, cfg: Inbound<'_>, mail: &Mail) -> Result<Outcome, NotTaken> {
    let support = cfg.replies.support_address();
    let Some(user) = sender(pool, mail).await? else {
        return Err(Refused(format!(
            "{} is not the address of an account of this support desk's customers. Write from the address you log in with, or open a ticket in the portal.",
            mail.from
        )));
    };
    let memberships = orgs::for_user(pool, user.id()).await?;
    let membership = match memberships.as_slice() {
        [one] => one,
        [] => {
            return Err(Refused(format!(
                "{} is not a member of any organization, so there is no one a ticket could be opened for.",
                mail.from
            )))
        }
        many => {
            return Err(Refused(format!(
                "{} is a member of several organizations ({}), so an email cannot say which one the ticket is for. Open it in the portal, in the right organization.",
                mail.from,
                many.iter().map(|m| m.org.name.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let subject: String = mail
        .subject
        .replace(['\r', '\n'], " ")
        .chars()
        .take(MAX_SUBJECT)
        .collect();
    let opening = Opening {
        subject: if subject.trim().is_empty() {
            format!(
                "Email from {}",
                mail.from_name.as_deref().unwrap_or(&mail.from)
            )
        } else {
            subject
        },
        body: text_of(mail, None),
        category: "other".to_owned(),
        priority: "normal".to_owned(),
        instance: String::new(),
        shared_with_org: false,
    };
    let member = Member {
        org: membership.org.id(),
        role: membership.role,
        who: who(&user, cfg.ip),
    };
    let mut extras = Extras::files(cfg.files, mail.files.clone());
    extras.email_message_id = Some(&mail.message_id);
    extras.email_authentication = Some(mail.auth);
    let id = tickets::open_with(pool, member, &opening, extras)
        .await
        .map_err(|e| match e {
            SupportError::Invalid(list) => Refused(format!(
                "{}\n\nWrite again to {support}, or open the ticket in the portal.",
                list.into_iter()
                    .map(|(_, m)| m)
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            other => Failed(other),
        })?;
    Ok(Outcome::Opened(id))
}

async fn bounce(pool: &PgPool, mail: &Mail, reason: String) -> Result<Outcome, InboundError> {
    tracing::info!(reason = %reason, "email to support bounced");
    herd_jobs::enqueue(
        pool,
        &BounceEmail {
            to: mail.from.clone(),
            reason: reason.clone(),
            email_message_id: mail.message_id.clone(),
            requested_at: time::OffsetDateTime::now_utc(),
        },
    )
    .await?;
    Ok(Outcome::Bounced(reason))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn addresses() -> ReplyAddresses {
        ReplyAddresses::new(
            "Support@Help.Herd.test",
            b"a secret of 32 bytes, or so.....",
        )
        .unwrap()
    }

    #[test]
    fn reply_addresses_are_signed() {
        let a = addresses();
        assert_eq!(a.support_address(), "support@help.herd.test");
        let t = TicketId(Uuid::now_v7());
        let addr = a.for_ticket(t);
        assert!(addr.starts_with("support+"), "{addr}");
        assert!(addr.split('@').next().unwrap().len() <= 64, "{addr}");
        assert_eq!(a.read(&addr), Recipient::Ticket(t));
        assert_eq!(a.read(&addr.to_ascii_uppercase()), Recipient::Ticket(t));
        assert_eq!(a.read(&format!("<{addr}>")), Recipient::Ticket(t));
        assert_eq!(a.read("support@help.herd.test"), Recipient::Support);
        assert_eq!(a.read("other@help.herd.test"), Recipient::Elsewhere);
        assert_eq!(a.read("support@elsewhere.test"), Recipient::Elsewhere);
        // Another ticket's id with this MAC, a changed MAC, no MAC.
        let other = TicketId(Uuid::now_v7());
        let mac = addr.split('.').nth(1).unwrap().split('@').next().unwrap();
        let swapped = format!("support+{}.{mac}@help.herd.test", other.0.as_simple());
        assert_eq!(a.read(&swapped), Recipient::Forged);
        let mut altered = addr.clone();
        let at = altered.find('@').unwrap();
        altered.replace_range(
            at - 1..at,
            if addr[..at].ends_with('0') { "1" } else { "0" },
        );
        assert_eq!(a.read(&altered), Recipient::Forged);
        assert_eq!(
            a.read(&format!("support+{}@help.herd.test", t.0.as_simple())),
            Recipient::Forged
        );
        // Another key signs differently.
        let b = ReplyAddresses::new("support@help.herd.test", b"another secret").unwrap();
        assert_eq!(b.read(&addr), Recipient::Forged);
        assert!(ReplyAddresses::new("not an address", b"k").is_err());
        assert!(!format!("{a:?}").contains("key"));
    }

    #[test]
    fn only_the_topmost_trusted_authentication_results_count() {
        let id = Some("mx.herd.test");
        let from = "carla@acme.example";
        let pass = |v: &[&str]| authenticate(v, id, from);
        assert_eq!(
            pass(&["mx.herd.test; dmarc=pass (p=reject) header.from=acme.example"]),
            SenderAuth::Passed("dmarc")
        );
        assert_eq!(
            pass(&["mx.herd.test 1; spf=fail; dkim=pass header.d=acme.example"]),
            SenderAuth::Passed("dkim")
        );
        assert_eq!(
            pass(&["MX.herd.test;\r\n\tdkim=pass header.i=@mail.acme.example"]),
            SenderAuth::Passed("dkim")
        );
        // Not aligned, another server's verdict, a dmarc pass about another domain.
        assert_eq!(
            pass(&["mx.herd.test; dkim=pass header.d=evil.example"]),
            SenderAuth::Failed
        );
        assert_eq!(
            pass(&["mx.herd.test; dkim=pass header.d=example"]),
            SenderAuth::Failed
        );
        assert_eq!(pass(&["evil.example; dmarc=pass"]), SenderAuth::Failed);
        assert_eq!(
            pass(&["mx.herd.test; dmarc=pass header.from=evil.example"]),
            SenderAuth::Failed
        );
        assert_eq!(
            pass(&["mx.herd.test; (dmarc=pass) dmarc=fail"]),
            SenderAuth::Failed
        );
        assert_eq!(pass(&[]), SenderAuth::Failed);
        // A lower header with the trusted id was possibly written by the sender.
        assert_eq!(
            pass(&["mx.herd.test; dmarc=fail", "mx.herd.test; dmarc=pass"]),
            SenderAuth::Failed
        );
        assert_eq!(
            pass(&["other.example; dmarc=fail", "mx.herd.test; dmarc=pass"]),
            SenderAuth::Passed("dmarc")
        );
        assert_eq!(
            authenticate(&["mx.herd.test; dmarc=pass"], None, from),
            SenderAuth::NotConfigured
        );
    }

    #[test]
    fn quoted_text_and_signatures_are_stripped() {
        // Herd's email to the ticket ends with its link; quotes carry it.
        let q = Some("/support/0190");
        let link = "https://herd.test/o/acme/support/0190";
        let gmail = format!("Thanks, restarted it.\n\nOn Mon, 7 Dec 2026 at 10:00, Herd Support <support+x@help.test> wrote:\n> Please restart the web pod.\n> {link}\n");
        assert_eq!(strip_quoted(&gmail, q), "Thanks, restarted it.");
        let wrapped = format!("Still broken.\nOn Mon, 7 Dec 2026 at 10:00, Herd Support\n<support+x@help.test> wrote:\n\n> quoted\n> {link}\n");
        assert_eq!(strip_quoted(&wrapped, q), "Still broken.");
        let french =
            format!("Merci !\n\nLe lun. 7 déc. 2026 à 10:00, Herd <s@h.test> a écrit :\n> Bonjour\n> {link}\n");
        assert_eq!(strip_quoted(&french, q), "Merci !");
        let interleaved =
            format!("> Did you restart it?\nYes, twice.\n> And?\nStill 502.\n> {link}\n");
        assert_eq!(strip_quoted(&interleaved, q), "Yes, twice.\nStill 502.");
        let signed = "It works now.\n\n-- \nCarla Dupont\nAcme IT\n";
        assert_eq!(strip_quoted(signed, q), "It works now.");
        assert_eq!(strip_quoted(signed, None), "It works now.");
        let phone = "OK\n\nSent from my iPhone\n\n> quoted";
        assert_eq!(strip_quoted(phone, q), "OK");
        let outlook = format!(
            "Done.\n\n-----Original Message-----\nFrom: Herd\nSent: Monday\nPlease restart\n{link}\n"
        );
        assert_eq!(strip_quoted(&outlook, q), "Done.");
        let outlook2 = format!(
            "Done.\n\n________________________________\nFrom: Herd Support\nSent: Monday\n{link}\n"
        );
        assert_eq!(strip_quoted(&outlook2, q), "Done.");
        // A sentence starting with "On" is kept.
        let plain = "On our side the server answers 502.\nSince this morning.";
        assert_eq!(strip_quoted(plain, q), plain);
        assert_eq!(strip_quoted(&format!("> only a quote\n> {link}\n"), q), "");
    }

    #[test]
    fn signatures_are_no_files_and_odd_inline_images_are_left_out() {
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ";
        let raw = format!(
            "From: carla@acme.example\r\nTo: support@help.test\r\nSubject: Signed\r\nMessage-ID: <s@acme.example>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"s1\"\r\n\r\n\
             --s1\r\nContent-Type: multipart/related; boundary=\"r1\"\r\n\r\n\
             --r1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe screenshot is inline.\r\n\
             --r1\r\nContent-Type: image/png; name=\"shot.png\"\r\nContent-Disposition: inline; filename=\"shot.png\"\r\nContent-ID: <shot>\r\nContent-Transfer-Encoding: base64\r\n\r\n{png}\r\n\
             --r1\r\nContent-Type: image/x-emf; name=\"logo.emf\"\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\nAQAAAGwAAAAAAAAA\r\n\
             --r1--\r\n\
             --s1\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n\
             --s1--\r\n"
        );
        let mail = parse(raw.as_bytes(), None).unwrap();
        let names: Vec<&str> = mail.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["shot.png"],
            "the signature and the EMF logo are no files"
        );
        assert_eq!(mail.left_out, 1);
        let text = text_of(&mail, None);
        assert!(text.starts_with("The screenshot is inline."), "{text}");
        assert!(text.contains("was left out"), "{text}");
    }

    #[test]
    fn what_the_customer_pastes_or_forwards_is_kept() {
        let q = Some("/support/0190");
        // Headers of another email pasted into the answer, with Herd's quote below.
        let pasted = "The abuse report we got:\nFrom: abuse@isp.example\nDate: Mon, 7 Dec 2026\nSubject: Spam from your server\n\nPlease act.\n\nOn Mon, 7 Dec 2026, Herd wrote:\n> Send us the report.\n> https://herd.test/o/acme/support/0190\n";
        assert_eq!(
            strip_quoted(pasted, q),
            "The abuse report we got:\nFrom: abuse@isp.example\nDate: Mon, 7 Dec 2026\nSubject: Spam from your server\n\nPlease act."
        );
        // A forwarded message without Herd's quote: all of it stays.
        let forwarded = "See below.\n\n---------- Forwarded message ---------\nFrom: abuse@isp.example\nDate: Mon\n\nSpam from your server.";
        assert_eq!(strip_quoted(forwarded, q), forwarded);
        // Quoted lines that are not Herd's email (a log, another message) stay.
        let log = "The proxy says:\n> upstream timed out\n> while reading response header";
        assert_eq!(strip_quoted(log, q), log);
        // A new ticket by email quotes nothing of Herd's: only the signature goes.
        let new =
            "Please look at this:\n\nOn Sunday, Bob wrote:\n> our server is slow\n\n-- \nCarla";
        assert_eq!(
            strip_quoted(new, None),
            "Please look at this:\n\nOn Sunday, Bob wrote:\n> our server is slow"
        );
    }
}
