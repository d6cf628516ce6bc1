//! The CSRF check of every console form: each session has a random secret
//! (`highway.ui_sessions.csrf_secret`); every POST form carries it in the hidden field
//! [`FIELD`], and a POST whose field is missing or differs is refused with 403 before
//! anything happens. The comparison takes the same time wherever the values differ.
//! (`SameSite=Strict` already keeps the cookie off cross-site requests; this is the
//! second lock.)

/// The hidden field's name.
pub const FIELD: &str = "csrf";

/// True when `given` is the session's secret.
pub fn verify(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_own_secret_passes() {
        let secret = crate::api::ui::session::random_hex();
        assert!(verify(&secret, Some(&secret)));
        assert!(!verify(&secret, None));
        assert!(!verify(&secret, Some("")));
        assert!(!verify(&secret, Some(&secret[..63])));
        let mut other = secret.clone().into_bytes();
        other[10] = if other[10] == b'a' { b'b' } else { b'a' };
        assert!(!verify(&secret, Some(std::str::from_utf8(&other).unwrap())));
        assert!(!verify("", Some("")));
    }
}
