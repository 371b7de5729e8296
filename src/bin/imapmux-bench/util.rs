//! Pure helpers: parsing of command-line values (sizes, durations, user
//! lists) and a small deterministic PRNG.

use std::time::Duration;

/// One account to log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub password: String,
}

/// Expand `%d` in `pattern` to `n`.
pub fn expand(pattern: &str, n: usize) -> String {
    pattern.replace("%d", &n.to_string())
}

/// Accounts `1..=count` from a user pattern and a password pattern
/// (`user%d` / `pass%d`; a pattern without `%d` is used as is).
pub fn accounts_from_pattern(
    users: &str,
    password: &str,
    count: usize,
) -> Result<Vec<Account>, String> {
    if count == 0 {
        return Err("--user-count must be at least 1".into());
    }
    if users.is_empty() {
        return Err("--users must not be empty".into());
    }
    Ok((1..=count)
        .map(|i| Account {
            user: expand(users, i),
            password: expand(password, i),
        })
        .collect())
}

/// Accounts from the text of a users file: one `user:password` per line;
/// blank lines and lines starting with `#` are skipped.
pub fn accounts_from_file_text(text: &str) -> Result<Vec<Account>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| format!("users file line {}: expected user:password", i + 1))?;
        if user.is_empty() {
            return Err(format!("users file line {}: empty user name", i + 1));
        }
        out.push(Account {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    if out.is_empty() {
        return Err("users file holds no account".into());
    }
    Ok(out)
}

/// Parse a byte size: `512`, `2k`, `20K`, `1m`, `10M`, `1g` (binary units;
/// an optional trailing `b`/`B`/`iB` is accepted: `2kb`, `1MiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let mut body = lower.as_str();
    for suffix in ["ib", "b"] {
        if let Some(rest) = body.strip_suffix(suffix) {
            if rest.ends_with(['k', 'm', 'g']) || suffix == "b" {
                body = rest;
                break;
            }
        }
    }
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1u64 << 20),
        Some('g') => (&body[..body.len() - 1], 1u64 << 30),
        _ => (body, 1u64),
    };
    if num.is_empty() {
        return Err(format!("invalid size {s:?}"));
    }
    let v: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 512, 2k, 1m)"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Parse a comma-separated list of sizes (`2k,20k,200k`).
pub fn parse_sizes(s: &str) -> Result<Vec<u64>, String> {
    let v: Vec<u64> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_size)
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err("empty size list".into());
    }
    Ok(v)
}

/// Human form of a size for labels: `2k`, `1m`, `1500`.
pub fn size_label(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}m", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

/// Parse a duration: `30s`, `5m`, `1500ms`, `1h 2m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && (0.0..1e9).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {s:?}"));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parse a fraction in `0.0..=1.0`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid fraction {s:?}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("fraction {s:?} must be between 0 and 1"));
    }
    Ok(v)
}

/// Quote a string for IMAP (`"..."` with `\` and `"` escaped). `None` if it
/// holds CR, LF or NUL, which a quoted string cannot carry.
pub fn imap_quote(s: &str) -> Option<String> {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// xorshift64* — small, fast, deterministic; not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 step so that small seeds give different streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x1234_5678 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_expansion() {
        let a = accounts_from_pattern("user%d", "pass%d", 3).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].user, "user1");
        assert_eq!(a[0].password, "pass1");
        assert_eq!(a[2].user, "user3");
        assert_eq!(a[2].password, "pass3");
        let a = accounts_from_pattern("bob", "secret", 2).unwrap();
        assert_eq!(a[1].user, "bob");
        assert_eq!(a[1].password, "secret");
        let a = accounts_from_pattern("u%d@example.org", "fixed", 12).unwrap();
        assert_eq!(a[11].user, "u12@example.org");
        assert!(accounts_from_pattern("user%d", "p", 0).is_err());
        assert!(accounts_from_pattern("", "p", 1).is_err());
    }

    #[test]
    fn users_file() {
        let a = accounts_from_file_text("# comment\nalice:pw1\r\n\nbob:p:w\n").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].user, "alice");
        assert_eq!(a[0].password, "pw1");
        assert_eq!(a[1].password, "p:w");
        assert!(accounts_from_file_text("nocolon\n").is_err());
        assert!(accounts_from_file_text("# only comments\n").is_err());
        assert!(accounts_from_file_text(":pw\n").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("20K").unwrap(), 20 * 1024);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100b").unwrap(), 100);
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("-1k").is_err());
        assert!(parse_size("99999999999999g").is_err());
        assert_eq!(
            parse_sizes("2k,20k,200k").unwrap(),
            vec![2048, 20480, 204800]
        );
        assert!(parse_sizes(",").is_err());
        assert_eq!(size_label(2048), "2k");
        assert_eq!(size_label(10 << 20), "10m");
        assert_eq!(size_label(1500), "1500");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h 2m").unwrap(), Duration::from_secs(3720));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn fractions_and_quoting() {
        assert_eq!(parse_fraction("0.8").unwrap(), 0.8);
        assert!(parse_fraction("1.5").is_err());
        assert_eq!(imap_quote("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert!(imap_quote("a\r\nb").is_none());
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
            let u = a.unit();
            b.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
