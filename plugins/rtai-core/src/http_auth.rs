//! Access checks of the collection's embedded HTTP servers (analyticssink's
//! dashboard, live delivery's API and operator page), free of any HTTP
//! framework: the bearer token a request presents, its constant-time
//! comparison, and the Host check that keeps DNS rebinding away from servers
//! without a token.

use std::net::{IpAddr, SocketAddr};

/// Longest query string parsed (for parameters or a token); longer is refused.
pub const MAX_QUERY_LEN: usize = 4096;
/// Longest bearer token looked at; longer ones are never equal to a set token.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Whether a server on `addr` without a token is reachable beyond this host.
pub fn exposed(addr: &SocketAddr, has_token: bool) -> bool {
    !has_token && !addr.ip().is_loopback()
}

/// `host[:port]` of a Host header; `None` when it is not one (userinfo,
/// a path, an unbracketed IPv6 address, a port that is not a number).
pub fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = if rest.is_empty() {
            None
        } else {
            Some(rest.strip_prefix(':')?)
        };
        (&host[..=end], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((name, port))
}

/// Whether `host` (a Host header) names a server bound to `bound` the way a
/// client on this machine does: `localhost`, a loopback address or the bound
/// address (any address literal when bound to all interfaces), with the bound
/// port (no port only when that is 80). Names other than `localhost` are
/// refused: under DNS rebinding the attacker's name is what arrives.
pub fn host_allowed(host: &str, bound: SocketAddr) -> bool {
    let Some((name, port)) = split_host_port(host) else {
        return false;
    };
    if port.unwrap_or(80) != bound.port() {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .map(|v6| v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6))
        .unwrap_or_else(|| name.parse::<std::net::Ipv4Addr>().map(IpAddr::V4));
    match literal {
        Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The bearer token from an `Authorization: Bearer …` header value or, for
/// browsers' EventSource and WebSocket which cannot set headers, the
/// `access_token` query parameter (RFC 6750). The scheme name is
/// case-insensitive (RFC 9110); values longer than [`MAX_TOKEN_LEN`] and
/// queries longer than [`MAX_QUERY_LEN`] are not looked at.
pub fn presented_token(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if let Some(v) = authorization.filter(|v| v.len() <= MAX_TOKEN_LEN + 16)
        && let Some((scheme, t)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        let t = t.trim();
        return (t.len() <= MAX_TOKEN_LEN).then(|| t.to_string());
    }
    query.filter(|q| q.len() <= MAX_QUERY_LEN).and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
            .filter(|v| v.len() <= MAX_TOKEN_LEN)
    })
}

/// Whether `presented` equals `expected`, in time independent of where they differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", Some("abd")));
        assert!(!token_matches("abc", Some("ab")));
        assert!(!token_matches("abc", None));
        assert_eq!(
            presented_token(Some("bearer  t1 "), Some("access_token=t2")).as_deref(),
            Some("t1")
        );
        assert_eq!(
            presented_token(None, Some("a=1&access_token=t%202")).as_deref(),
            Some("t 2")
        );
        let huge = format!("access_token={}", "x".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(presented_token(None, Some(&huge)), None);
    }
}
