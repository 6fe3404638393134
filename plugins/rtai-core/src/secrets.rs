//! Keeping secrets out of logs, error messages and readable properties:
//! passwords in a URL's `user:password@`, secret-named URL query parameters
//! (`?password=…`, `?api_key=…`) and libpq `key=value` connection strings.

/// `url` with the password of its `user:password@` part replaced by `***`
/// (`postgres://app:s3cret@db/x` → `postgres://app:***@db/x`); anything else unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // A lone user part may itself be a token (redis://TOKEN@host).
        None if !userinfo.is_empty() => "***",
        None => "",
    };
    let redacted = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    format!("{}{}{}", &url[..scheme_end], redacted, &rest[at..])
}

/// Parameter names holding secrets contain one of these (compared in lower case).
/// Redacting a harmless parameter (`sslkey`, a file path) costs nothing.
const SECRET_WORDS: &[&str] = &[
    "pass",
    "pwd",
    "token",
    "secret",
    "key",
    "credential",
    "signature",
];

/// What replaces a connection string that cannot be parsed (it may hold a password anywhere).
pub const UNPARSABLE: &str = "(an unparsable connection string, not shown)";

/// libpq's connection keywords (PostgreSQL 16 `libpq` docs, "Parameter Key Words").
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// The keyword of a `keyword = value` string's first pair.
fn first_keyword(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0 && s[end..].trim_start().starts_with('=')).then(|| &s[..end])
}

/// Whether `database` is a libpq connection string (`host=… dbname=…`): its
/// first keyword is one of libpq's. A SQLite path never starts like that.
pub fn is_pg_conninfo(database: &str) -> bool {
    first_keyword(database).is_some_and(|k| LIBPQ_KEYWORDS.contains(&k))
}

/// The `(keyword, byte range of the value)` pairs of a libpq connection string,
/// parsed as libpq does (values bare or single-quoted, `\` escapes); `None`
/// when it is not one.
fn conninfo_pairs(s: &str) -> Option<Vec<(&str, std::ops::Range<usize>)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut pairs = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            break;
        }
        let key_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == key_start {
            return None;
        }
        let key = &s[key_start..i];
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let value_start = i;
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'\\') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        i = i.min(b.len());
        pairs.push((key, value_start..i));
    }
    (!pairs.is_empty()).then_some(pairs)
}

/// `url`'s query parameters named like secrets with their values replaced by `***`.
fn redact_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let end = url[q..].find('#').map_or(url.len(), |f| q + f);
    let query = url[q + 1..end]
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if is_secret(
                    &form_urlencoded::parse(k.as_bytes())
                        .next()
                        .map(|(k, _)| k)
                        .unwrap_or_default(),
                ) =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{}?{query}{}", &url[..q], &url[end..])
}

/// A URL or connection string (a database, Redis or endpoint URL) as it may be shown: passwords and other secrets
/// replaced by `***` in URLs (user info and query) and libpq connection
/// strings; a connection string that does not parse is not shown at all.
/// Anything else (a file path) is unchanged.
pub fn redact(s: &str) -> String {
    if s.contains("://") {
        return redact_query(&redact_url(s));
    }
    if first_keyword(s).is_none() {
        return s.to_string();
    }
    let Some(pairs) = conninfo_pairs(s) else {
        return UNPARSABLE.to_string();
    };
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (key, value) in pairs {
        if is_secret(key) {
            out.push_str(&s[at..value.start]);
            out.push_str("***");
            at = value.end;
        }
    }
    out.push_str(&s[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        let cases = [
            (
                "postgres://app:s3cret@127.0.0.1:5432/db",
                "postgres://app:***@127.0.0.1:5432/db",
            ),
            (
                "redis://:tok@localhost:6379/0",
                "redis://:***@localhost:6379/0",
            ),
            ("redis://onlytoken@localhost", "redis://***@localhost"),
            ("postgres://app@host/db", "postgres://***@host/db"),
            ("postgres://host/db?user=a@b", "postgres://host/db?user=a@b"),
            ("http://h/p#x@y", "http://h/p#x@y"),
            ("/var/lib/events.sqlite", "/var/lib/events.sqlite"),
            ("", ""),
            ("postgres://a:b:c@h", "postgres://a:***@h"),
            ("postgres://u:p@w@h/db", "postgres://u:***@h/db"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
            if url.contains(":s3cret") || url.contains(":tok@") {
                assert!(!redact_url(url).contains("s3cret") && !redact_url(url).contains("tok@"));
            }
        }
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let cases = [
            // URL user info (redact_url).
            (
                "postgres://app:s3cret@127.0.0.1:5432/db",
                "postgres://app:***@127.0.0.1:5432/db",
            ),
            (
                "redis://:s3cret@localhost:6379/0",
                "redis://:***@localhost:6379/0",
            ),
            // URL query strings.
            (
                "postgres://app@h/db?password=s3cret",
                "postgres://***@h/db?password=***",
            ),
            (
                "postgresql://h/db?sslmode=require&sslpassword=s3cret&application_name=x",
                "postgresql://h/db?sslmode=require&sslpassword=***&application_name=x",
            ),
            (
                "postgres://h/db?PassWord=s3cret",
                "postgres://h/db?PassWord=***",
            ),
            (
                "postgres://h/db?pass%77ord=s3cret",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "redis://h/0?access_token=s3cret&api_key=s3cret&db=1",
                "redis://h/0?access_token=***&api_key=***&db=1",
            ),
            (
                "https://h/x?token=s3cret#part",
                "https://h/x?token=***#part",
            ),
            (
                "postgres://u:s3cret@h/db?password=s3cret&connect_timeout=5",
                "postgres://u:***@h/db?password=***&connect_timeout=5",
            ),
            ("postgres://h/db?password=", "postgres://h/db?password=***"),
            (
                "postgres://h/db?sslmode=disable",
                "postgres://h/db?sslmode=disable",
            ),
            ("postgres://h/db?", "postgres://h/db?"),
            // libpq key=value strings.
            (
                "host=127.0.0.1 port=5432 user=app password=s3cret dbname=events",
                "host=127.0.0.1 port=5432 user=app password=*** dbname=events",
            ),
            (
                "host=h password = 's3 cr\\'et' dbname=x",
                "host=h password = *** dbname=x",
            ),
            ("  sslpassword=s3cret\thost=h", "  sslpassword=***\thost=h"),
            ("host=h password=s3cret\\ s3cret", "host=h password=***"),
            ("host=h password=", "host=h password=***"),
            ("dbname='my events' user=app", "dbname='my events' user=app"),
            ("host=h password='s3cret", UNPARSABLE),
            ("host=h s3cret", UNPARSABLE),
            // SQLite paths and empty.
            ("/var/lib/events.sqlite", "/var/lib/events.sqlite"),
            ("events.sqlite", "events.sqlite"),
            ("/tmp/a=b.sqlite", "/tmp/a=b.sqlite"),
            ("", ""),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want, "{input}");
            assert!(
                !got.contains("s3cret") && !got.contains("cr\\'et"),
                "{input} → {got}"
            );
        }
    }

    #[test]
    fn conninfo_strings_are_postgresql() {
        for s in [
            "host=localhost dbname=events",
            "dbname=events",
            " user = app password=x",
            "service=prod",
            "host=h password='open",
        ] {
            assert!(is_pg_conninfo(s), "{s}");
        }
        for s in [
            "",
            "events.sqlite",
            "/tmp/host=x",
            "events=1.sqlite",
            "host",
            "postgres://h/db",
            "hosts=x",
        ] {
            assert!(!is_pg_conninfo(s), "{s}");
        }
    }
}
