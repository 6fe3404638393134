//! Keeping secrets out of logs, error messages and readable properties.

/// `url` with the password of its `user:password@` part replaced by `***`
/// (`postgres://app:s3cret@db/x` → `postgres://app:***@db/x`); anything else unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // A lone user part may itself be a token (redis://TOKEN@host).
        None if !userinfo.is_empty() => "***",
        None => "",
    };
    let redacted = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
    format!("{}{}{}", &url[..scheme_end], redacted, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        let cases = [
            ("postgres://app:s3cret@127.0.0.1:5432/db", "postgres://app:***@127.0.0.1:5432/db"),
            ("redis://:tok@localhost:6379/0", "redis://:***@localhost:6379/0"),
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
}
