//! Image references (`[domain[:port]/]path[:tag][@sha256:hex]`), parsed with the grammar
//! of Docker's `distribution/reference` package and normalised to always name a tag or a
//! digest.
//!
//! Why we parse at all instead of letting the daemon refuse: a bad reference must fail
//! the activity before any Docker call, non-retryably, with a reason (TESTING.md S8), and
//! a reference without a tag makes `create_image` pull *every* tag (DOCKER-NOTES trap 23).
//!
//! One deliberate difference from Docker: Docker treats a first component with upper-case
//! letters (`UPPER/case`) as a registry host. We only treat a first component as a host
//! when it contains `.` or `:` or is `localhost`, so `UPPER/case` is refused as
//! "must be lowercase" rather than sent to a registry called `UPPER`.

use std::fmt;
use std::str::FromStr;

/// The code API callers and activity errors carry for every refusal from this module.
pub const INVALID_IMAGE_REFERENCE: &str = "invalid_image_reference";

/// Longest repository name (domain included) the registry API accepts.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Longest tag: `[\w][\w.-]{0,127}`.
pub const TAG_LENGTH_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host with an optional port, when the reference names one.
    pub domain: Option<String>,
    /// The repository path below the domain (`library/busybox`, `highway-test/busybox`).
    pub path: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>` when pinned by digest.
    pub digest: Option<String>,
}

/// Why an image reference was refused. Every variant carries the code
/// [`INVALID_IMAGE_REFERENCE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("the image reference is empty")]
    Empty,
    #[error("the image reference contains whitespace or control characters")]
    InvalidCharacters,
    #[error("repository name must be lowercase")]
    NotLowercase,
    #[error("repository path has an empty component (`//`, or a leading or trailing `/`)")]
    EmptyComponent,
    #[error(
        "repository path component {0:?} is invalid: use lowercase letters and digits, \
         separated by `.`, `_`, `__` or dashes"
    )]
    InvalidComponent(String),
    #[error("registry host {0:?} is invalid")]
    InvalidDomain(String),
    #[error("repository name is {0} characters; the limit is 255")]
    NameTooLong(usize),
    #[error("tag is {0} characters; the limit is 128")]
    TagTooLong(usize),
    #[error("tag {0:?} is invalid: it must match [A-Za-z0-9_][A-Za-z0-9_.-]*")]
    InvalidTag(String),
    #[error("digest algorithm {0:?} is not supported; use sha256")]
    UnsupportedDigest(String),
    #[error("digest must be `sha256:` followed by 64 lowercase hex characters")]
    InvalidDigest,
}

impl ImageRefError {
    /// The stable code for API responses and activity errors.
    pub fn code(&self) -> &'static str {
        INVALID_IMAGE_REFERENCE
    }
}

impl ImageRef {
    /// Parses and normalises (adds `latest` when there is neither a tag nor a digest).
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageRefError::InvalidCharacters);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d)?)),
            None => (s, None),
        };
        // A tag is a `:` after the last `/`; a `:` before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(parse_tag(&rest[at + 1..])?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ImageRefError::NameTooLong(name.len()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_domain(first)?;
                (Some(first.to_string()), path)
            }
            _ => (None, name),
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ImageRefError::NotLowercase);
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(ImageRefError::EmptyComponent);
            }
            if !is_path_component(component) {
                return Err(ImageRefError::InvalidComponent(truncate(component)));
            }
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Self {
            domain,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// The repository name without tag or digest (`localhost:5000/highway-test/busybox`),
    /// as `create_image`'s `from_image` wants it.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// What to pass as `create_image`'s `tag`: the digest when pinned, else the tag.
    /// Never empty, so a pull never fetches every tag.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Keeps error messages bounded whatever the caller sent.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_digest(d: &str) -> Result<String, ImageRefError> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(ImageRefError::InvalidDigest);
    };
    if alg != "sha256" {
        return Err(ImageRefError::UnsupportedDigest(truncate(alg)));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ImageRefError::InvalidDigest);
    }
    Ok(d.to_string())
}

fn parse_tag(t: &str) -> Result<String, ImageRefError> {
    if t.len() > TAG_LENGTH_MAX {
        return Err(ImageRefError::TagTooLong(t.len()));
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut bytes = t.bytes();
    let ok = bytes.next().is_some_and(word) && bytes.all(|b| word(b) || b == b'.' || b == b'-');
    if !ok {
        return Err(ImageRefError::InvalidTag(truncate(t)));
    }
    Ok(t.to_string())
}

/// `[a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
    }
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn check_domain(d: &str) -> Result<(), ImageRefError> {
    let bad = || ImageRefError::InvalidDomain(truncate(d));
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            a => Some(a.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(h) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        };
        if !h.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        ImageRef::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn normalises_to_a_tag_or_digest() {
        assert_eq!(ok("busybox"), "busybox:latest");
        assert_eq!(ok("busybox:1.36"), "busybox:1.36");
        assert_eq!(ok("library/busybox"), "library/busybox:latest");
        assert_eq!(
            ok("localhost:5000/highway-test/busybox:1"),
            "localhost:5000/highway-test/busybox:1"
        );
        assert_eq!(ok("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(ok("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(ok("GHCR.io/org/app"), "GHCR.io/org/app:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok(&format!("busybox@{d}")), format!("busybox@{d}"));
        assert_eq!(ok(&format!("busybox:1@{d}")), format!("busybox:1@{d}"));
        assert_eq!(
            ok("a__b-c---e/f_g.h:V1.0-rc_1"),
            "a__b-c---e/f_g.h:V1.0-rc_1"
        );
        assert_eq!(ok("[::1]:5000/x:y"), "[::1]:5000/x:y");
    }

    #[test]
    fn splits_for_pulls() {
        let r = ImageRef::parse("localhost:5000/highway-test/busybox").unwrap();
        assert_eq!(r.domain.as_deref(), Some("localhost:5000"));
        assert_eq!(r.name(), "localhost:5000/highway-test/busybox");
        assert_eq!(r.tag_or_digest(), "latest");
        let d = format!("sha256:{}", "0".repeat(64));
        let r = ImageRef::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(r.tag_or_digest(), d);
    }

    #[test]
    fn refuses_what_docker_refuses() {
        use ImageRefError::*;
        let cases: Vec<(String, ImageRefError)> = vec![
            ("".into(), Empty),
            ("UPPER/case:tag".into(), NotLowercase),
            ("Busybox".into(), NotLowercase),
            ("a//b".into(), EmptyComponent),
            ("a/".into(), EmptyComponent),
            ("/a".into(), EmptyComponent),
            (format!("busybox:{}", "t".repeat(129)), TagTooLong(129)),
            ("a".repeat(256), NameTooLong(256)),
            ("busybox:-x".into(), InvalidTag("-x".into())),
            ("busybox:".into(), InvalidTag("".into())),
            ("busybox@sha256:abc".into(), InvalidDigest),
            (format!("busybox@sha256:{}", "A".repeat(64)), InvalidDigest),
            (
                format!("busybox@md5:{}", "a".repeat(32)),
                UnsupportedDigest("md5".into()),
            ),
            ("busybox@".into(), InvalidDigest),
            ("bad..name".into(), InvalidComponent("bad..name".into())),
            ("-lead".into(), InvalidComponent("-lead".into())),
            ("trail_".into(), InvalidComponent("trail_".into())),
            ("a___b".into(), InvalidComponent("a___b".into())),
            ("sp ace".into(), InvalidCharacters),
            ("nul\0".into(), InvalidCharacters),
            ("ex-.com/a".into(), InvalidDomain("ex-.com".into())),
            (
                "localhost:port/a".into(),
                InvalidDomain("localhost:port".into()),
            ),
            ("[zz]:5000/a".into(), InvalidDomain("[zz]:5000".into())),
        ];
        for (input, want) in cases {
            let got = ImageRef::parse(&input).expect_err(&input);
            assert_eq!(got, want, "{input}");
            assert_eq!(got.code(), INVALID_IMAGE_REFERENCE);
        }
    }

    #[test]
    fn accepts_limits_exactly() {
        ok(&format!("busybox:{}", "t".repeat(128)));
        ok(&"a".repeat(255));
    }
}
