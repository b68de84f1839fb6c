//! The client's address, for the audit log, login throttling and access to `/metrics`.

use crate::state::{AppState, WebConfig};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The client's IP address as text: the socket's peer or, behind trusted proxies
/// (`HERD_TRUST_PROXY`), the address the outermost of them saw (see [`client_addr`]).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip());
        let ip = client_addr(&parts.headers, peer, &state.config)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        Ok(ClientIp(ip))
    }
}

/// The client's address. Without a trusted proxy, the socket's peer. Behind
/// `trusted_proxy_hops` proxies that each append the address they saw to
/// `X-Forwarded-For`, the entry that many places from the right: the one the outermost
/// trusted proxy added. Entries left of it are whatever the client sent, so they count for
/// nothing. `None` when that entry is missing or not an address.
pub fn client_addr(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    config: &WebConfig,
) -> Option<IpAddr> {
    let forwarded: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !config.trust_proxy || forwarded.is_empty() {
        // Not behind a proxy, or a direct connection to Herd.
        return peer.map(|ip| ip.to_canonical());
    }
    let i = forwarded
        .len()
        .checked_sub(config.trusted_proxy_hops.max(1))?;
    forwarded[i]
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// A range of addresses in CIDR notation (`10.0.0.0/8`, `fd00::/8`); a bare address is a
/// range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// 127.0.0.0/8 and ::1: what may read `/metrics` when nothing else is configured.
    pub fn loopback() -> Vec<IpRange> {
        vec![
            IpRange {
                network: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            IpRange {
                network: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree.
fn prefix_matches(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (full, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpRange { network, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::{client_addr, IpRange};
    use crate::WebConfig;
    use axum::http::HeaderMap;
    use std::net::IpAddr;

    #[test]
    fn the_client_is_the_entry_the_outermost_trusted_proxy_added() {
        let mut config = WebConfig::new(
            url::Url::parse("https://herd.example").unwrap_or_else(|e| panic!("{e}")),
        );
        let peer = Some(ip("10.0.0.1"));
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    "x-forwarded-for",
                    v.parse().unwrap_or_else(|e| panic!("{e}")),
                );
            }
            h
        };
        let spoofed = with(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(
            client_addr(&spoofed, peer, &config),
            peer,
            "no proxy trusted"
        );
        config.trust_proxy = true;
        assert_eq!(
            client_addr(&spoofed, peer, &config),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(&with(&["1.1.1.1", "203.0.113.9"]), peer, &config),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(&HeaderMap::new(), peer, &config),
            peer,
            "a direct connection"
        );
        assert_eq!(
            client_addr(&with(&["1.1.1.1, garbage"]), peer, &config),
            None
        );
        config.trusted_proxy_hops = 2;
        assert_eq!(
            client_addr(&with(&["1.1.1.1, 203.0.113.9, 10.0.0.2"]), peer, &config),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(&with(&["203.0.113.9"]), peer, &config),
            None,
            "fewer entries than proxies"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn ranges() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(r.contains(ip("10.200.3.4")));
        assert!(!r.contains(ip("11.0.0.1")));
        assert!(!r.contains(ip("::1")));
        let r: IpRange = "192.168.1.128/25".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(r.contains(ip("192.168.1.200")));
        assert!(!r.contains(ip("192.168.1.127")));
        let r: IpRange = "fd00::/8".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(r.contains(ip("fd12::1")));
        assert!(!r.contains(ip("fe80::1")));
        let one: IpRange = "203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(one.contains(ip("203.0.113.9")));
        assert!(!one.contains(ip("203.0.113.8")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains(ip("8.8.8.8")));
        // An IPv4 client on an IPv6 socket.
        assert!(IpRange::loopback()
            .iter()
            .any(|r| r.contains(ip("::ffff:127.0.0.1"))));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "localhost",
            "10.0.0.0/",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}
