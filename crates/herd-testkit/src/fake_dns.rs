//! A name server on a loopback UDP port answering TXT queries, for the domain checks Herd
//! makes with a real resolver (hickory). By default it answers like a customer who added
//! the record Herd asked for: the `_herd-challenge` TXT of a server's domain holds its
//! proof, read from the database. `manual()` turns that off: only records a test sets
//! exist, and every other name does not (NXDOMAIN).

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct FakeDns {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<String>>>>,
    auto: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl FakeDns {
    /// Starts answering on 127.0.0.1 (a free port); `pool` serves the automatic answers.
    pub async fn start(pool: PgPool) -> FakeDns {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a UDP port");
        let dns = FakeDns {
            addr: sock.local_addr().expect("its address"),
            records: Arc::default(),
            auto: Arc::new(AtomicBool::new(true)),
            queries: Arc::default(),
        };
        let me = dns.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = me.answer(&pool, &q).await;
                if let Ok(bytes) = answer.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        dns
    }

    /// Only the records set with [`set_txt`](Self::set_txt) exist from now on.
    pub fn manual(&self) {
        self.auto.store(false, Ordering::SeqCst);
    }

    /// Sets the TXT strings at `name` (no trailing dot).
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        self.records.lock().expect("records").insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        );
    }

    /// The names asked for so far.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("queries").clone()
    }

    async fn txt_at(&self, pool: &PgPool, name: &str) -> Option<Vec<String>> {
        if let Some(v) = self.records.lock().expect("records").get(name) {
            return Some(v.clone());
        }
        if !self.auto.load(Ordering::SeqCst) {
            return None;
        }
        let domain = name.strip_prefix("_herd-challenge.")?;
        let token: Option<String> = sqlx::query_scalar(
            "SELECT domain_token FROM instances WHERE domain = $1 AND domain_token IS NOT NULL",
        )
        .bind(domain)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        token.map(|t| vec![herd_domain::domain::challenge_value(&t)])
    }

    async fn answer(&self, pool: &PgPool, q: &Message) -> Message {
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        let mut found = false;
        for query in &q.queries {
            r.add_query(query.clone());
            let name = query
                .name
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            self.queries.lock().expect("queries").push(name.clone());
            if query.query_type != RecordType::TXT {
                continue;
            }
            if let Some(values) = self.txt_at(pool, &name).await {
                found = true;
                for v in values {
                    r.add_answer(Record::from_rdata(
                        query.name.clone(),
                        0,
                        RData::TXT(TXT::new(vec![v])),
                    ));
                }
            }
        }
        if !found {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        r
    }
}
