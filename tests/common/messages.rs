//! Deterministic test messages (CRLF line endings, so what IMAP returns for
//! `BODY[]` is byte-identical to what was seeded).

/// The message seeded as UID `uid` (1-based) for `user`.
///
/// * UID 2 is a multipart/mixed MIME message (text, HTML alternative and a
///   base64 attachment).
/// * Every third UID carries a larger body (~20 KiB) to exercise literals
///   that span many reads.
/// * All others are small text/plain messages.
///
/// Subjects are `Test message <uid> for <user>`, Message-IDs
/// `<user.uid@imapmux.test>`.
pub fn seed_message(user: &str, uid: u32) -> Vec<u8> {
    let date = format!(
        "Mon, {:02} Jan 2024 10:{:02}:00 +0000",
        1 + uid % 28,
        uid % 60
    );
    let mut m = String::new();
    m.push_str(&format!("From: Sender {uid} <sender{uid}@example.org>\r\n"));
    m.push_str(&format!("To: {user} <{user}@imapmux.test>\r\n"));
    m.push_str(&format!("Subject: Test message {uid} for {user}\r\n"));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{user}.{uid}@imapmux.test>\r\n"));
    m.push_str("MIME-Version: 1.0\r\n");
    if uid == 2 {
        let b = format!("=-=imapmux-boundary-{user}-{uid}=-=");
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n"
        ));
        m.push_str("This is a multi-part message in MIME format.\r\n\r\n");
        m.push_str(&format!("--{b}\r\n"));
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        m.push_str(&format!(
            "Hello {user}, this is part one (Grüße, ✓).\r\n\r\n"
        ));
        m.push_str(&format!("--{b}\r\n"));
        m.push_str("Content-Type: text/html; charset=us-ascii\r\n\r\n");
        m.push_str(&format!(
            "<html><body><p>Part two for {user}</p></body></html>\r\n\r\n"
        ));
        m.push_str(&format!("--{b}\r\n"));
        m.push_str("Content-Type: application/octet-stream; name=\"data.bin\"\r\n");
        m.push_str("Content-Disposition: attachment; filename=\"data.bin\"\r\n");
        m.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        // Base64 of bytes 0..=255, wrapped at 76 columns.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let enc = base64_encode(&bytes);
        for chunk in enc.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap());
            m.push_str("\r\n");
        }
        m.push_str(&format!("\r\n--{b}--\r\n"));
    } else {
        m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        m.push_str(&format!("Body of message {uid} for {user}.\r\n"));
        let lines = if uid % 3 == 0 { 300 } else { 3 };
        for i in 0..lines {
            m.push_str(&format!(
                "Line {i:04} of message {uid}: the quick brown fox jumps over the lazy dog.\r\n"
            ));
        }
        m.push_str("-- \r\nimapmux tests\r\n");
    }
    m.into_bytes()
}

/// A message of exactly `size` bytes (CRLF lines, at least ~120 bytes) whose
/// content depends on `tag`. Handy for APPEND round-trips.
pub fn sized_message(tag: &str, size: usize) -> Vec<u8> {
    let header = format!(
        "From: tester@imapmux.test\r\nTo: user@imapmux.test\r\nSubject: sized {tag} {size}\r\n\r\n"
    );
    let mut m = header.into_bytes();
    assert!(size >= m.len() + 2, "sized_message: size {size} too small");
    let mut i = 0usize;
    let mut line = |m: &mut Vec<u8>, n: usize| {
        // one line of exactly n (>= 2) bytes including CRLF
        let mut l = format!("{tag} line {i:06} ").into_bytes();
        while l.len() < n - 2 {
            l.push(b'a' + (l.len() % 26) as u8);
        }
        l.truncate(n - 2);
        l.extend_from_slice(b"\r\n");
        m.extend_from_slice(&l);
        i += 1;
    };
    while size - m.len() > 156 {
        line(&mut m, 78);
    }
    let remaining = size - m.len();
    if remaining > 78 {
        line(&mut m, remaining / 2);
        line(&mut m, remaining - remaining / 2);
    } else {
        line(&mut m, remaining);
    }
    assert_eq!(m.len(), size);
    m
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
