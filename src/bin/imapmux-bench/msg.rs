//! Test messages: generation of valid RFC 5322 / MIME messages of an exact
//! size, each carrying its own checksum so that any reader can verify a
//! fetched copy without state.
//!
//! Every message has the headers
//!
//! ```text
//! X-Bench-Size: 0000020480
//! X-Bench-Digest: 3f2a9c0d11e0b7a4
//! ```
//!
//! `X-Bench-Size` is the total length of the message in bytes (CRLF line
//! ends, as fetched by `BODY[]`); `X-Bench-Digest` is the lower-case hex
//! xxh3-64 of the whole message with the 16 digest characters replaced by
//! 16 ASCII zeros (`0`).

use base64::Engine;
use xxhash_rust::xxh3::Xxh3;

use crate::util::Rng;

pub const DIGEST_HEADER: &[u8] = b"X-Bench-Digest: ";
pub const SIZE_HEADER: &[u8] = b"X-Bench-Size: ";
const ZEROS: &[u8; 16] = b"0000000000000000";

/// Why a message failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    NoHeaderEnd,
    NoDigestHeader,
    BadDigestSyntax,
    NoSizeHeader,
    SizeMismatch { header: u64, actual: u64 },
    DigestMismatch { header: String, computed: String },
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::NoHeaderEnd => write!(f, "no end of header block"),
            VerifyError::NoDigestHeader => write!(f, "no X-Bench-Digest header"),
            VerifyError::BadDigestSyntax => write!(f, "malformed X-Bench-Digest header"),
            VerifyError::NoSizeHeader => write!(f, "no valid X-Bench-Size header"),
            VerifyError::SizeMismatch { header, actual } => {
                write!(f, "size mismatch: header says {header}, got {actual}")
            }
            VerifyError::DigestMismatch { header, computed } => {
                write!(f, "digest mismatch: header {header}, computed {computed}")
            }
        }
    }
}

/// Offset of the value of header `name` (which includes `: `) inside the
/// header block `head` (which ends before the blank line).
fn header_value_at(head: &[u8], name: &[u8]) -> Option<usize> {
    if head.len() >= name.len() && head[..name.len()].eq_ignore_ascii_case(name) {
        return Some(name.len());
    }
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&head[from..], b"\r\n") {
        let start = from + p + 2;
        if head.len() >= start + name.len()
            && head[start..start + name.len()].eq_ignore_ascii_case(name)
        {
            return Some(start + name.len());
        }
        from = start;
    }
    None
}

/// xxh3-64 of `msg` with the 16 bytes at `at` replaced by zeros.
fn digest_with_hole(msg: &[u8], at: usize) -> u64 {
    let mut h = Xxh3::new();
    h.update(&msg[..at]);
    h.update(ZEROS);
    h.update(&msg[at + 16..]);
    h.digest()
}

/// Verify a fetched message against its own `X-Bench-Size` and
/// `X-Bench-Digest` headers.
pub fn verify(msg: &[u8]) -> Result<(), VerifyError> {
    let head_end = memchr::memmem::find(msg, b"\r\n\r\n").ok_or(VerifyError::NoHeaderEnd)?;
    let head = &msg[..head_end];
    let at = header_value_at(head, DIGEST_HEADER).ok_or(VerifyError::NoDigestHeader)?;
    let hex = head.get(at..at + 16).ok_or(VerifyError::BadDigestSyntax)?;
    // 16 hex digits, and the value ends right after them.
    let ends_ok = matches!(head.get(at + 16), None | Some(b'\r'));
    if !ends_ok || !hex.iter().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::BadDigestSyntax);
    }
    let hex_str = String::from_utf8_lossy(hex).to_ascii_lowercase();
    let sat = header_value_at(head, SIZE_HEADER).ok_or(VerifyError::NoSizeHeader)?;
    let size_digits: Vec<u8> = head[sat..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    let header_size: u64 = std::str::from_utf8(&size_digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(VerifyError::NoSizeHeader)?;
    if header_size != msg.len() as u64 {
        return Err(VerifyError::SizeMismatch {
            header: header_size,
            actual: msg.len() as u64,
        });
    }
    let computed = format!("{:016x}", digest_with_hole(msg, at));
    if computed != hex_str {
        return Err(VerifyError::DigestMismatch {
            header: hex_str,
            computed,
        });
    }
    Ok(())
}

/// MIME shape of a generated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plain,
    Alternative,
    Attachment,
}

impl Shape {
    pub fn for_index(index: u64) -> Shape {
        match index % 3 {
            0 => Shape::Plain,
            1 => Shape::Alternative,
            _ => Shape::Attachment,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Plain => "plain",
            Shape::Alternative => "alternative",
            Shape::Attachment => "attachment",
        }
    }
}

const WORDS: &[&str] = &[
    "imap",
    "proxy",
    "mail",
    "message",
    "folder",
    "server",
    "client",
    "fetch",
    "store",
    "select",
    "idle",
    "login",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "bench",
    "load",
    "latency",
    "throughput",
    "literal",
    "envelope",
    "header",
    "body",
    "part",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
];

/// Text of exactly `len` bytes (0 or at least 3): lines of words, each at
/// most 76 bytes with CRLF.
fn filler(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let mut remaining = len;
    while remaining > 0 {
        let mut line_len = if remaining <= 76 { remaining - 2 } else { 74 };
        let leftover = remaining - (line_len + 2);
        if leftover == 1 || leftover == 2 {
            line_len -= 3;
        }
        let start = out.len();
        while out.len() - start < line_len {
            if out.len() > start {
                out.push(b' ');
                if out.len() - start == line_len {
                    break;
                }
            }
            let w = WORDS[rng.below(WORDS.len())].as_bytes();
            let room = line_len - (out.len() - start);
            out.extend_from_slice(&w[..w.len().min(room)]);
        }
        out.extend_from_slice(b"\r\n");
        remaining -= line_len + 2;
    }
}

/// Base64 of `raw` in lines of 76 characters, each ended by CRLF.
fn base64_lines(raw: &[u8], out: &mut Vec<u8>) {
    let enc = base64::engine::general_purpose::STANDARD.encode(raw);
    for line in enc.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 5322 date for a Unix timestamp (UTC).
pub fn rfc5322_date(ts: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Keep only characters that are safe in an address local part.
fn addr_safe(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        .take(64)
        .collect();
    if t.is_empty() {
        "rcpt".into()
    } else {
        t
    }
}

/// Render the message with `fill` filler bytes; the digest is left as zeros.
fn render(
    owner: &str,
    index: u64,
    target: u64,
    shape: Shape,
    fill: usize,
    raw_len: usize,
    rng: &Rng,
) -> (Vec<u8>, usize) {
    let mut rng = rng.clone();
    let tag = rng.next_u64();
    let boundary = format!("=_bench_{tag:016x}");
    let local = addr_safe(owner);
    let mut m = Vec::with_capacity(target as usize + 1024);
    m.extend_from_slice(
        format!(
            "From: Bench Sender <sender{}@bench.invalid>\r\n\
             To: {local} <{local}@bench.invalid>\r\n\
             Subject: bench message {index} ({}, {} bytes)\r\n\
             Date: {}\r\n\
             Message-ID: <{tag:016x}.{index}@bench.invalid>\r\n\
             MIME-Version: 1.0\r\n",
            index % 7,
            shape.name(),
            target,
            rfc5322_date(1_704_067_200 + index as i64 * 61),
        )
        .as_bytes(),
    );
    // The size is patched in at the end (fixed width keeps lengths stable).
    m.extend_from_slice(SIZE_HEADER);
    let size_at = m.len();
    m.extend_from_slice(b"0000000000\r\n");
    m.extend_from_slice(DIGEST_HEADER);
    let digest_at = m.len();
    m.extend_from_slice(ZEROS);
    m.extend_from_slice(b"\r\n");
    match shape {
        Shape::Plain => {
            m.extend_from_slice(
                b"Content-Type: text/plain; charset=us-ascii\r\n\
                  Content-Transfer-Encoding: 7bit\r\n\r\n",
            );
            filler(&mut rng, fill, &mut m);
        }
        Shape::Alternative => {
            let text = if fill >= 6 { fill / 2 } else { fill };
            let text = if text == 1 || text == 2 { 3 } else { text };
            let html = fill - text.min(fill);
            let html = if html == 1 || html == 2 { 0 } else { html };
            m.extend_from_slice(
                format!(
                    "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                     This is a multi-part message in MIME format.\r\n\r\n\
                     --{boundary}\r\n\
                     Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                )
                .as_bytes(),
            );
            filler(&mut rng, text, &mut m);
            m.extend_from_slice(
                format!(
                    "--{boundary}\r\n\
                     Content-Type: text/html; charset=us-ascii\r\n\r\n\
                     <html><body><pre>\r\n"
                )
                .as_bytes(),
            );
            filler(&mut rng, html, &mut m);
            m.extend_from_slice(format!("</pre></body></html>\r\n--{boundary}--\r\n").as_bytes());
        }
        Shape::Attachment => {
            let mut raw = vec![0u8; raw_len];
            rng.fill(&mut raw);
            m.extend_from_slice(
                format!(
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
                     This is a multi-part message in MIME format.\r\n\r\n\
                     --{boundary}\r\n\
                     Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                )
                .as_bytes(),
            );
            filler(&mut rng, fill, &mut m);
            m.extend_from_slice(
                format!(
                    "--{boundary}\r\n\
                     Content-Type: application/octet-stream; name=\"data-{index}.bin\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\
                     Content-Disposition: attachment; filename=\"data-{index}.bin\"\r\n\r\n"
                )
                .as_bytes(),
            );
            base64_lines(&raw, &mut m);
            m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
    }
    let size = format!("{:010}", m.len());
    m[size_at..size_at + 10].copy_from_slice(size.as_bytes());
    (m, digest_at)
}

/// Generate message number `index` for `owner`, as close to `target` bytes
/// as possible (exact unless `target` is below the fixed overhead, about
/// 600–900 bytes depending on the shape), with its digest filled in.
pub fn generate(owner: &str, index: u64, target: u64) -> Vec<u8> {
    let shape = Shape::for_index(index);
    let rng = Rng::new(xxhash_rust::xxh3::xxh3_64(owner.as_bytes()) ^ index.rotate_left(32));
    let (base, _) = render(owner, index, target, shape, 0, 0, &rng);
    let avail = target.saturating_sub(base.len() as u64) as usize;
    // About 70% of the free space is the attachment: whole base64 lines of
    // 76 characters + CRLF, each carrying 57 bytes.
    let raw_len = match shape {
        Shape::Attachment => avail * 7 / 10 / 78 * 57,
        _ => 0,
    };
    let mut fill = avail - raw_len / 57 * 78;
    // Filler of 1 or 2 bytes cannot hold a line; the alternative shape
    // splits the filler in two, each part 0 or at least 3 bytes.
    if fill > 0 && fill < 3 {
        fill = 3;
    }
    if shape == Shape::Alternative && fill > 0 && fill < 6 {
        fill = 6;
    }
    let (mut m, digest_at) = render(owner, index, target, shape, fill, raw_len, &rng);
    let d = format!("{:016x}", digest_with_hole(&m, digest_at));
    m[digest_at..digest_at + 16].copy_from_slice(d.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_wellformed(m: &[u8]) {
        // CRLF only, no bare CR or LF, no NUL, lines at most 998 bytes.
        for (i, &b) in m.iter().enumerate() {
            assert_ne!(b, 0);
            if b == b'\n' {
                assert!(i > 0 && m[i - 1] == b'\r', "bare LF at {i}");
            }
            if b == b'\r' {
                assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
        }
        for line in m.split(|b| *b == b'\n') {
            assert!(line.len() <= 1000);
        }
        assert!(m.ends_with(b"\r\n"));
    }

    #[test]
    fn exact_sizes_all_shapes_verify() {
        for index in 0..6u64 {
            for target in [2048u64, 20 * 1024, 200 * 1024, 1 << 20, 1500, 1001] {
                let m = generate("user1", index, target);
                assert_eq!(m.len() as u64, target, "index {index} target {target}");
                check_wellformed(&m);
                verify(&m).unwrap();
            }
        }
    }

    #[test]
    fn small_targets_still_valid() {
        for index in 0..3u64 {
            for target in [0u64, 1, 100, 500, 700, 900] {
                let m = generate("u", index, target);
                check_wellformed(&m);
                verify(&m).unwrap();
                assert!(m.len() as u64 >= target);
            }
        }
        // Every length just above the overhead is hit exactly.
        for index in 0..3u64 {
            // (The Subject names the target: same digit count as below.)
            let base = generate("u", index, 100).len() as u64;
            assert!(base + 90 < 1000);
            for target in base + 6..base + 90 {
                let m = generate("u", index, target);
                assert_eq!(m.len() as u64, target, "shape {index} target {target}");
                verify(&m).unwrap();
            }
        }
    }

    #[test]
    fn shapes_have_mime_structure() {
        let plain = generate("user1", 0, 4096);
        let alt = generate("user1", 1, 4096);
        let att = generate("user1", 2, 4096);
        assert!(memchr::memmem::find(&plain, b"Content-Type: text/plain").is_some());
        assert!(memchr::memmem::find(&alt, b"multipart/alternative").is_some());
        assert!(memchr::memmem::find(&alt, b"Content-Type: text/html").is_some());
        assert!(memchr::memmem::find(&att, b"multipart/mixed").is_some());
        assert!(memchr::memmem::find(&att, b"Content-Transfer-Encoding: base64").is_some());
        // Closing boundary present.
        let b_at = memchr::memmem::find(&att, b"boundary=\"").unwrap() + 10;
        let b_end = b_at + att[b_at..].iter().position(|c| *c == b'"').unwrap();
        let closing = [b"--", &att[b_at..b_end], b"--\r\n"].concat();
        assert!(att.ends_with(&closing));
    }

    #[test]
    fn deterministic_per_owner_and_index() {
        assert_eq!(generate("a", 3, 3000), generate("a", 3, 3000));
        assert_ne!(generate("a", 3, 3000), generate("b", 3, 3000));
        assert_ne!(generate("a", 3, 3000), generate("a", 6, 3000));
    }

    #[test]
    fn tampering_is_detected() {
        let m = generate("user2", 1, 20 * 1024);
        verify(&m).unwrap();
        // A flipped body byte.
        let mut t = m.clone();
        let n = t.len();
        t[n - 100] ^= 0x01;
        assert!(matches!(
            verify(&t),
            Err(VerifyError::DigestMismatch { .. })
        ));
        // A changed header byte (Subject).
        let mut t = m.clone();
        let s = memchr::memmem::find(&t, b"Subject: bench").unwrap();
        t[s + 9] = b'B';
        assert!(matches!(
            verify(&t),
            Err(VerifyError::DigestMismatch { .. })
        ));
        // A changed digest digit.
        let mut t = m.clone();
        let d = memchr::memmem::find(&t, DIGEST_HEADER).unwrap() + DIGEST_HEADER.len();
        t[d] = if t[d] == b'a' { b'b' } else { b'a' };
        assert!(matches!(
            verify(&t),
            Err(VerifyError::DigestMismatch { .. })
        ));
        // Truncated message.
        let t = &m[..m.len() - 10];
        assert!(matches!(verify(t), Err(VerifyError::SizeMismatch { .. })));
        // Extra bytes.
        let mut t = m.clone();
        t.extend_from_slice(b"x\r\n");
        assert!(matches!(verify(&t), Err(VerifyError::SizeMismatch { .. })));
        // No headers / not a bench message.
        assert_eq!(verify(b"hello"), Err(VerifyError::NoHeaderEnd));
        assert_eq!(
            verify(b"Subject: x\r\n\r\nbody\r\n"),
            Err(VerifyError::NoDigestHeader)
        );
        assert_eq!(
            verify(b"X-Bench-Digest: zz\r\n\r\nbody\r\n"),
            Err(VerifyError::BadDigestSyntax)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_704_067_200),
            "Mon, 01 Jan 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(1_709_210_096),
            "Thu, 29 Feb 2024 12:34:56 +0000"
        );
    }
}
