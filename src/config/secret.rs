//! What counts as a secret in a pipeline file, and how it is kept out of
//! what vigil prints (logs, errors, `vigil validate`, `Debug` output):
//! librdkafka properties named like a password, a secret or a token (and
//! private keys), and the password of a URL.
//!
//! Deliberately not here: where these are applied. The config types'
//! `Debug`, Kafka client errors (`crate::kafka`) and the batch job's
//! PostgreSQL errors (`crate::schedule`) call them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// What a secret is printed as.
pub const MASK: &str = "***";

/// Whether the librdkafka property `name` holds a secret: its name says
/// password, secret or token, whatever the case (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`), or it is one of
/// those librdkafka itself treats as sensitive for another reason (a
/// private key, OAUTHBEARER's configuration).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"].iter().any(|word| name.contains(word))
        || matches!(name.as_str(), "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config")
}

/// `text` with the password of every URL in it
/// (`scheme://user:PASSWORD@host...`) replaced by [`MASK`]. A URL's user
/// part ends at its last `@` before the next URL (a broker list holds
/// several), so a password with an `@` of its own is hidden whole; an `@`
/// further on (in a path) can only hide more.
pub fn without_url_passwords(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let start = scheme + 3;
        let end = rest[start..].find("://").map_or(rest.len(), |next| start + next);
        let authority = &rest[start..end];
        let password = authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at)));
        match password {
            Some((colon, at)) => {
                out.push_str(&rest[..start + colon + 1]);
                out.push_str(MASK);
                out.push_str(&rest[start + at..end]);
            }
            None => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` (a library's message, which may quote what it was given) with
/// every occurrence of each of `secrets` replaced by [`MASK`].
pub fn hide<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            text = text.replace(secret, MASK);
        }
    }
    text
}

/// The values of the secret properties of `properties` (see
/// [`is_secret_property`]), to [`hide`] from a message.
pub fn secret_values(properties: &BTreeMap<String, String>) -> impl Iterator<Item = &str> {
    properties.iter().filter(|(name, _)| is_secret_property(name)).map(|(_, value)| value.as_str())
}

/// `Debug` of librdkafka properties, the secret ones' values masked.
pub struct DebugProperties<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for DebugProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_secret_property(name) { MASK } else { value.as_str() };
                (name, shown)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_known_by_name() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
            "my.api.Token",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in ["sasl.username", "security.protocol", "ssl.ca.location", "acks", "sasl.pasword"] {
            assert!(!is_secret_property(name), "{name}");
        }
    }

    #[test]
    fn url_passwords_are_masked() {
        let cases = [
            ("postgres://vigil:hunter2@db:5432/app", "postgres://vigil:***@db:5432/app"),
            ("postgres://vigil:p@ss:w/rd@db/app?x=1", "postgres://vigil:***@db/app?x=1"),
            ("connecting to postgresql://u:pw@h/d failed", "connecting to postgresql://u:***@h/d failed"),
            ("SASL_SSL://u:a@h1:9092,SASL_SSL://u:b@h2:9092", "SASL_SSL://u:***@h1:9092,SASL_SSL://u:***@h2:9092"),
            // No password, no URL: unchanged.
            ("postgres://vigil@db/app", "postgres://vigil@db/app"),
            ("postgres://db:5432/app", "postgres://db:5432/app"),
            ("k1:9092,k2:9092", "k1:9092,k2:9092"),
            ("", ""),
        ];
        for (url, masked) in cases {
            assert_eq!(without_url_passwords(url), masked, "{url}");
        }
    }

    #[test]
    fn hide_replaces_every_occurrence_of_each_secret() {
        assert_eq!(hide("bad value \"hunter2\" (hunter2)", ["hunter2", ""]), "bad value \"***\" (***)");
        assert_eq!(hide("nothing to hide", ["hunter2"]), "nothing to hide");
    }

    #[test]
    fn debug_properties_masks_secret_values_only() {
        let properties: BTreeMap<String, String> =
            [("sasl.password", "hunter2"), ("acks", "all")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(format!("{:?}", DebugProperties(&properties)), r#"{"acks": "all", "sasl.password": "***"}"#);
        assert_eq!(secret_values(&properties).collect::<Vec<_>>(), ["hunter2"]);
    }
}
