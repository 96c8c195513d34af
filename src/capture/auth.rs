//! Who may use the capture's control endpoints?
//!
//! A caller sends `Authorization: Bearer <credential>` (the scheme in any case), where the
//! credential is the gateway's static token or a JWT signed with HS256 by a secret shared
//! with the backend ([`JwtKey`]). A JWT must carry `exp` and be unexpired (60 s of clock
//! skew allowed), and must not be used before its `nbf` if it has one; its audience and
//! issuer are not checked. A JWT whose header marks extensions critical (`crit`) is
//! refused: we support none.
//! With neither a token nor a JWT secret configured every call is refused.

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The HS256 secret JWTs are checked with.
#[derive(Clone)]
pub struct JwtKey {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(HS256, ***)")
    }
}

/// Why a JWT secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An empty secret would let anyone sign tokens.
    #[error("the JWT secret is empty")]
    Empty,
}

impl JwtKey {
    /// A key for HS256 tokens signed with `secret`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Empty`] for an empty secret.
    pub fn hs256(secret: &[u8]) -> Result<JwtKey, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        // The backend's audience is not ours to know; the signature and expiry decide.
        validation.validate_aud = false;
        Ok(JwtKey {
            key: DecodingKey::from_secret(secret),
            validation,
        })
    }

    fn verify(&self, token: &str) -> Result<(), String> {
        jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &self.key, &self.validation)
            .map_err(|error| error.to_string())?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood; we know none.
        if names_critical_extensions(token) {
            return Err("its header marks extensions critical (crit); none is supported".into());
        }
        Ok(())
    }
}

/// Whether the JWT's header has a `crit` member (jsonwebtoken ignores it).
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_some_and(|header| header.contains_key("crit"))
}

/// Why a caller was refused (the text of the 401 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// Neither a token nor a JWT secret is configured.
    #[error("no gateway token or JWT secret is configured: every command is refused")]
    NotConfigured,
    /// No `Authorization: Bearer …` header.
    #[error("a bearer token or JWT is required (Authorization: Bearer …)")]
    Missing,
    /// The credential is neither the token nor a valid JWT.
    #[error("the bearer credential is not the gateway token{0}")]
    Invalid(String),
}

/// Checks the caller's `Authorization` header against `token` (empty: none) and `jwt`.
///
/// # Errors
///
/// [`Refusal`], saying why.
pub(crate) fn check(headers: &HeaderMap, token: &str, jwt: Option<&JwtKey>) -> Result<(), Refusal> {
    if token.is_empty() && jwt.is_none() {
        return Err(Refusal::NotConfigured);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(Refusal::Missing)?;
    if !token.is_empty() && same(given.as_bytes(), token.as_bytes()) {
        return Ok(());
    }
    match jwt {
        Some(key) => key
            .verify(given)
            .map_err(|error| Refusal::Invalid(format!(" and not a valid JWT: {error}"))),
        None => Err(Refusal::Invalid(String::new())),
    }
}

/// The credential of `Bearer <credential>`; the scheme is case-insensitive (RFC 7235 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim_start_matches(' '))
}

/// Compares in constant time (no early exit on the first differing byte).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn bearer(credential: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {credential}").parse().unwrap(),
        );
        headers
    }

    fn jwt(secret: &[u8], claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn the_token_or_a_valid_jwt_is_accepted_and_nothing_else() {
        let key = JwtKey::hs256(b"shared").unwrap();
        let valid = jwt(
            b"shared",
            serde_json::json!({"sub": "backend", "exp": now() + 600}),
        );
        assert_eq!(check(&bearer("t0ken"), "t0ken", Some(&key)), Ok(()));
        assert_eq!(check(&bearer(&valid), "t0ken", Some(&key)), Ok(()));
        assert_eq!(check(&bearer(&valid), "", Some(&key)), Ok(()));
        // The token alone does not accept JWTs, however well signed.
        assert!(matches!(
            check(&bearer(&valid), "t0ken", None),
            Err(Refusal::Invalid(_))
        ));
        let expired = jwt(b"shared", serde_json::json!({"exp": now() - 3600}));
        let other_secret = jwt(b"other", serde_json::json!({"exp": now() + 600}));
        let no_exp = jwt(b"shared", serde_json::json!({"sub": "backend"}));
        for refused in [expired, other_secret, no_exp, "t0ken2".into()] {
            assert!(
                matches!(
                    check(&bearer(&refused), "t0ken", Some(&key)),
                    Err(Refusal::Invalid(_))
                ),
                "{refused}"
            );
        }
        assert_eq!(
            check(&HeaderMap::new(), "t0ken", Some(&key)),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(&bearer("t0ken"), "", None),
            Err(Refusal::NotConfigured)
        );
        assert_eq!(JwtKey::hs256(b"").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["bearer t0ken", "BEARER t0ken", "Bearer  t0ken"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(check(&headers, "t0ken", None), Ok(()), "{value}");
        }
        for value in ["Bearert0ken", "Basic t0ken", "t0ken"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(
                check(&headers, "t0ken", None),
                Err(Refusal::Missing),
                "{value}"
            );
        }
    }

    /// RFC 7515 §4.1.11: a JWT marking an extension critical is refused, however well
    /// signed, since we understand none.
    #[test]
    fn a_jwt_with_critical_extensions_is_refused() {
        use base64::Engine as _;
        let b64 = |json: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
        };
        let sign = |header: serde_json::Value| {
            let signing_input = format!(
                "{}.{}",
                b64(header),
                b64(serde_json::json!({"exp": now() + 600}))
            );
            let signature = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(b"shared"),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{signing_input}.{signature}")
        };
        let key = JwtKey::hs256(b"shared").unwrap();
        let plain = sign(serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        assert_eq!(check(&bearer(&plain), "", Some(&key)), Ok(()));
        for header in [
            serde_json::json!({"alg": "HS256", "crit": ["exp2"], "exp2": 1}),
            serde_json::json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
        ] {
            let refused = check(&bearer(&sign(header.clone())), "", Some(&key));
            assert!(
                matches!(&refused, Err(Refusal::Invalid(why)) if why.contains("crit")),
                "{header}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_jwt_signed_with_another_algorithm_is_refused() {
        let key = JwtKey::hs256(b"shared").unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"exp": now() + 600}),
            &EncodingKey::from_secret(b"shared"),
        )
        .unwrap();
        assert!(check(&bearer(&hs512), "", Some(&key)).is_err());
    }
}
