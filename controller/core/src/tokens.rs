//! The bootstrap token file, local mode's answer to "whose token is this": lines of
//! `<token> <namespace>/<serviceaccount>`, `#` starting a comment. `mesh demo` writes
//! it and the controller's identity service reads it (`identity::BootstrapTokens`),
//! both by this one format.

use mesh_api::names::{is_dns_label, ServiceAccount};
use std::collections::HashMap;

/// Parses a bootstrap token file.
pub fn parse(text: &str) -> Result<HashMap<String, ServiceAccount>, String> {
    let mut tokens = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let mut fields = line.split_whitespace();
        let (Some(token), Some(account), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "line {n}: expected `<token> <namespace>/<serviceaccount>`"
            ));
        };
        let account = account
            .split_once('/')
            .filter(|(ns, sa)| is_dns_label(ns) && is_dns_label(sa))
            .map(|(ns, sa)| ServiceAccount::new(ns, sa))
            .ok_or_else(|| {
                format!("line {n}: {account:?} is not `<namespace>/<serviceaccount>`")
            })?;
        if tokens.insert(token.to_string(), account).is_some() {
            return Err(format!("line {n}: the token is listed twice"));
        }
    }
    Ok(tokens)
}

/// The account `token` proves by `tokens` (a parsed file), or why it proves none.
/// Whitespace around the token is not part of it (a token file may end in a newline).
pub fn lookup(
    tokens: &HashMap<String, ServiceAccount>,
    token: &[u8],
) -> Result<ServiceAccount, &'static str> {
    let token = std::str::from_utf8(token).map_err(|_| "token is not UTF-8")?;
    tokens
        .get(token.trim())
        .cloned()
        .ok_or("unknown bootstrap token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn parses_bootstrap_files() {
        let tokens = parse(
            "# proxies of the demo\n\
             t0k3n-web default/web\n\
             \n\
             t0k3n-db   data/db   # the database\n",
        )
        .expect("valid file");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens["t0k3n-web"], sa("default", "web"));
        assert_eq!(tokens["t0k3n-db"], sa("data", "db"));
    }

    #[test]
    fn rejects_bad_bootstrap_lines() {
        for (text, why) in [
            ("lonely\n", "line 1: expected"),
            ("a default/web extra\n", "line 1: expected"),
            ("# ok\na default\n", "line 2: \"default\" is not"),
            ("a Default/web\n", "is not `<namespace>/<serviceaccount>`"),
            ("a default/web.x\n", "is not `<namespace>/<serviceaccount>`"),
            (
                "a default/web\na data/db\n",
                "line 2: the token is listed twice",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn looks_tokens_up_trimmed() {
        let tokens = parse("one default/web\n").expect("valid file");
        assert_eq!(lookup(&tokens, b"one"), Ok(sa("default", "web")));
        assert_eq!(lookup(&tokens, b" one\n"), Ok(sa("default", "web")));
        assert_eq!(lookup(&tokens, b"two"), Err("unknown bootstrap token"));
        assert_eq!(lookup(&tokens, b"on"), Err("unknown bootstrap token"));
        assert_eq!(lookup(&tokens, b"\xffone"), Err("token is not UTF-8"));
    }
}
