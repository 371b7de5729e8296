//! Raw untagged FETCH responses recorded from Dovecot 2.3.19.1 (maildir).
//! Each entry: (name, command sent, byte length, the concatenated untagged
//! FETCH responses exactly as received). Recorded with a raw-socket client.

pub(super) const TRANSCRIPTS: &[(&str, &str, usize, &[u8])] = &[
    (
        "uid_header_fields",
        "UID FETCH 1:4 (BODY.PEEK[HEADER.FIELDS (From Subject)])",
        544,
        b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM SUBJECT)] {65}\r\n\
          From: Alice Example <alice@example.com>\r\n\
          Subject: Hello world\r\n\
          \r\n\
          )\r\n\
          * 2 FETCH (UID 2 BODY[HEADER.FIELDS (FROM SUBJECT)] {82}\r\n\
          From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n\
          Subject: Report \"Q1\" \\ results\r\n\
          \r\n\
          )\r\n\
          * 3 FETCH (UID 3 BODY[HEADER.FIELDS (FROM SUBJECT)] {81}\r\n\
          From: =?UTF-8?B?w4lsb2TDr2U=?= <elodie@example.fr>\r\n\
          Subject: Caf\xc3\xa9 cr\xc3\xa8me \xe2\x82\xac\r\n\
          \r\n\
          )\r\n\
          * 4 FETCH (UID 4 BODY[HEADER.FIELDS (FROM SUBJECT)] {72}\r\n\
          From: \"Weird, Name\" <w@example.com>\r\n\
          Subject: weird {12}\r\n\
          \x20(paren \"x\r\n\
          \r\n\
          )\r\n",
    ),
    (
        "bodystructure_multipart",
        "FETCH 2 (BODYSTRUCTURE)",
        274,
        b"* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 32 0 NIL NIL NIL NIL)(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" 28 NIL (\"attachment\" (\"filename\" \"data.bin\")) NIL NIL) \"mixed\" (\"boundary\" \"XYZ\") NIL NIL NIL))\r\n",
    ),
    (
        "envelope_literals",
        "FETCH 1:4 (ENVELOPE)",
        1206,
        b"* 1 FETCH (ENVELOPE (\"Mon, 3 Mar 2025 10:00:00 +0100\" \"Hello world\" ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Bob\" NIL \"bob\" \"example.org\")(NIL NIL \"carol\" \"example.net\")) NIL NIL NIL \"<m1@example.com>\"))\r\n\
          * 2 FETCH (ENVELOPE (\"Tue, 4 Mar 2025 11:30:00 +0000\" {21}\r\n\
          Report \"Q1\" \\ results ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((NIL NIL \"team\" \"example.org\")) NIL NIL NIL \"<m2@example.com>\"))\r\n\
          * 3 FETCH (ENVELOPE (\"Wed, 5 Mar 2025 09:15:00 +0100\" {16}\r\n\
          Caf\xc3\xa9 cr\xc3\xa8me \xe2\x82\xac ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((NIL NIL \"user1\" \"example.com\")) NIL NIL NIL \"<m3@example.fr>\"))\r\n\
          * 4 FETCH (ENVELOPE (\"Thu, 6 Mar 2025 12:00:00 +0000\" {20}\r\n\
          weird {12} (paren \"x ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL))\r\n",
    ),
    (
        "body_partial_already_seen",
        "FETCH 4 (BODY[]<0.100>)",
        131,
        b"* 4 FETCH (BODY[]<0> {100}\r\n\
          From: \"Weird, Name\" <w@example.com>\r\n\
          To: undisclosed-recipients:;\r\n\
          Subject: weird {12}\r\n\
          \x20(paren \"x\r\n\
          )\r\n",
    ),
    (
        "binary_peek",
        "FETCH 2 (BINARY.PEEK[1] BINARY.PEEK[2])",
        89,
        b"* 2 FETCH (BINARY[1] ~{20}\r\n\
          Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen BINARY[2] ~{20}\r\n\
          \x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13)\r\n",
    ),
    (
        "binary_size",
        "FETCH 2 (BINARY.SIZE[1] BINARY.SIZE[2])",
        49,
        b"* 2 FETCH (BINARY.SIZE[1] 20 BINARY.SIZE[2] 20)\r\n",
    ),
    (
        "rfc822_header",
        "FETCH 1 (RFC822.HEADER)",
        214,
        b"* 1 FETCH (RFC822.HEADER {179}\r\n\
          From: Alice Example <alice@example.com>\r\n\
          To: Bob <bob@example.org>, carol@example.net\r\n\
          Subject: Hello world\r\n\
          Date: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
          Message-ID: <m1@example.com>\r\n\
          \r\n\
          )\r\n",
    ),
    (
        "size_date_flags",
        "FETCH 1:4 (RFC822.SIZE INTERNALDATE FLAGS)",
        335,
        b"* 1 FETCH (RFC822.SIZE 227 INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" FLAGS (\\Seen))\r\n\
          * 2 FETCH (RFC822.SIZE 571 INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" FLAGS ())\r\n\
          * 3 FETCH (RFC822.SIZE 257 INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" FLAGS (\\Seen))\r\n\
          * 4 FETCH (RFC822.SIZE 155 INTERNALDATE \"26-Nov-2026 06:20:27 +0000\" FLAGS (\\Seen))\r\n",
    ),
    (
        "many_items",
        "UID FETCH 1:4 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (\"From\" subject)] BODY.PEEK[TEXT]<0.20>)",
        2668,
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" RFC822.SIZE 227 ENVELOPE (\"Mon, 3 Mar 2025 10:00:00 +0100\" \"Hello world\" ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Alice Example\" NIL \"alice\" \"example.com\")) ((\"Bob\" NIL \"bob\" \"example.org\")(NIL NIL \"carol\" \"example.net\")) NIL NIL NIL \"<m1@example.com>\") BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 48 2 NIL NIL NIL NIL) BODY[HEADER.FIELDS (\"FROM\" SUBJECT)] {65}\r\n\
          From: Alice Example <alice@example.com>\r\n\
          Subject: Hello world\r\n\
          \r\n\
          \x20BODY[TEXT]<0> {20}\r\n\
          This is the body of )\r\n\
          * 2 FETCH (UID 2 FLAGS () INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" RFC822.SIZE 571 ENVELOPE (\"Tue, 4 Mar 2025 11:30:00 +0000\" {21}\r\n\
          Report \"Q1\" \\ results ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((NIL NIL \"team\" \"example.org\")) NIL NIL NIL \"<m2@example.com>\") BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 32 0 NIL NIL NIL NIL)(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" 28 NIL (\"attachment\" (\"filename\" \"data.bin\")) NIL NIL) \"mixed\" (\"boundary\" \"XYZ\") NIL NIL NIL) BODY[HEADER.FIELDS (\"FROM\" SUBJECT)] {82}\r\n\
          From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n\
          Subject: Report \"Q1\" \\ results\r\n\
          \r\n\
          \x20BODY[TEXT]<0> {20}\r\n\
          Preamble\r\n\
          --XYZ\r\n\
          Con)\r\n\
          * 3 FETCH (UID 3 FLAGS (\\Seen) INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" RFC822.SIZE 257 ENVELOPE (\"Wed, 5 Mar 2025 09:15:00 +0100\" {16}\r\n\
          Caf\xc3\xa9 cr\xc3\xa8me \xe2\x82\xac ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((\"=?UTF-8?B?w4lsb2TDr2U=?=\" NIL \"elodie\" \"example.fr\")) ((NIL NIL \"user1\" \"example.com\")) NIL NIL NIL \"<m3@example.fr>\") BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 12 1 NIL NIL NIL NIL) BODY[HEADER.FIELDS (\"FROM\" SUBJECT)] {81}\r\n\
          From: =?UTF-8?B?w4lsb2TDr2U=?= <elodie@example.fr>\r\n\
          Subject: Caf\xc3\xa9 cr\xc3\xa8me \xe2\x82\xac\r\n\
          \r\n\
          \x20BODY[TEXT]<0> {12}\r\n\
          D\xc3\xa9j\xc3\xa0 vu.\r\n\
          )\r\n\
          * 4 FETCH (UID 4 FLAGS (\\Seen) INTERNALDATE \"26-Nov-2026 06:20:27 +0000\" RFC822.SIZE 155 ENVELOPE (\"Thu, 6 Mar 2025 12:00:00 +0000\" {20}\r\n\
          weird {12} (paren \"x ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((\"Weird, Name\" NIL \"w\" \"example.com\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL) BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 15 2 NIL NIL NIL NIL) BODY[HEADER.FIELDS (\"FROM\" SUBJECT)] {72}\r\n\
          From: \"Weird, Name\" <w@example.com>\r\n\
          Subject: weird {12}\r\n\
          \x20(paren \"x\r\n\
          \r\n\
          \x20BODY[TEXT]<0> {15}\r\n\
          body {3}\r\n\
          abc\r\n\
          )\r\n",
    ),
    (
        "full_macro",
        "FETCH 2 FULL",
        529,
        b"* 2 FETCH (FLAGS () INTERNALDATE \"26-Nov-2026 06:20:21 +0000\" RFC822.SIZE 571 ENVELOPE (\"Tue, 4 Mar 2025 11:30:00 +0000\" {21}\r\n\
          Report \"Q1\" \\ results ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"jorg\" \"example.com\")) ((NIL NIL \"team\" \"example.org\")) NIL NIL NIL \"<m2@example.com>\") BODY ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 32 0)(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" 28) \"mixed\"))\r\n",
    ),
    (
        "preview_snippet_modseq",
        "FETCH 3 (PREVIEW SNIPPET SAVEDATE MODSEQ)",
        120,
        b"* 3 FETCH (PREVIEW {10}\r\n\
          D\xc3\xa9j\xc3\xa0 vu. SNIPPET (FUZZY {10}\r\n\
          D\xc3\xa9j\xc3\xa0 vu.) SAVEDATE \"26-Nov-2026 06:20:27 +0000\" MODSEQ (7))\r\n",
    ),
    (
        "mime_parts",
        "FETCH 2 (BODY.PEEK[1.MIME] BODY.PEEK[2.MIME] BODY.PEEK[1] BINARY.PEEK[1]<2.5>)",
        362,
        b"* 2 FETCH (BODY[1.MIME] {88}\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\
          \r\n\
          \x20BODY[2.MIME] {148}\r\n\
          Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
          Content-Disposition: attachment; filename=\"data.bin\"\r\n\
          Content-Transfer-Encoding: base64\r\n\
          \r\n\
          \x20BODY[1] {32}\r\n\
          Gr=C3=BC=C3=9Fe aus M=C3=BCnchen BINARY[1]<2> ~{5}\r\n\
          \xc3\xbc\xc3\x9fe)\r\n",
    ),
    (
        "rfc822_and_text",
        "FETCH 1 (RFC822 RFC822.TEXT)",
        322,
        b"* 1 FETCH (RFC822 {227}\r\n\
          From: Alice Example <alice@example.com>\r\n\
          To: Bob <bob@example.org>, carol@example.net\r\n\
          Subject: Hello world\r\n\
          Date: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
          Message-ID: <m1@example.com>\r\n\
          \r\n\
          This is the body of message one.\r\n\
          Second line.\r\n\
          \x20RFC822.TEXT {48}\r\n\
          This is the body of message one.\r\n\
          Second line.\r\n\
          )\r\n",
    ),
    (
        "body_nobracket",
        "FETCH 2 (BODY)",
        167,
        b"* 2 FETCH (BODY ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 32 0)(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" 28) \"mixed\"))\r\n",
    ),
    (
        "changedsince",
        "UID FETCH 1:4 (FLAGS) (CHANGEDSINCE 1)",
        172,
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (6))\r\n\
          * 2 FETCH (UID 2 FLAGS () MODSEQ (6))\r\n\
          * 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (7))\r\n\
          * 4 FETCH (UID 4 FLAGS (\\Seen) MODSEQ (11))\r\n",
    ),
    (
        "implicit_seen_flags",
        "FETCH 2 (BODY[]<0.10>)",
        54,
        b"* 2 FETCH (FLAGS (\\Seen) BODY[]<0> {10}\r\n\
          From: =?ut)\r\n",
    ),
    (
        "implicit_seen_flags_after_uid",
        "FETCH 2 (RFC822.TEXT UID)",
        386,
        b"* 2 FETCH (UID 2 FLAGS (\\Seen) RFC822.TEXT {333}\r\n\
          Preamble\r\n\
          --XYZ\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\
          \r\n\
          Gr=C3=BC=C3=9Fe aus M=C3=BCnchen\r\n\
          --XYZ\r\n\
          Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
          Content-Disposition: attachment; filename=\"data.bin\"\r\n\
          Content-Transfer-Encoding: base64\r\n\
          \r\n\
          AAECAwQFBgcICQoLDA0ODxAREhM=\r\n\
          --XYZ--\r\n\
          )\r\n",
    ),
    (
        // Message 5 expunged by another session before this FETCH; the
        // tagged reply was `OK [EXPUNGEISSUED] Some messages were already
        // expunged`, followed by `* 5 FETCH (FLAGS (\Deleted \Recent))`.
        "expunged_placeholders",
        "FETCH 5 (UID FLAGS RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE BODYSTRUCTURE BINARY.SIZE[1] INTERNALDATE)",
        329,
        b"* 5 FETCH (UID 5 FLAGS (\\Deleted \\Recent) RFC822.SIZE 0 INTERNALDATE \"26-Nov-2026 06:22:56 +0000\" BODY[] NIL BODY[HEADER.FIELDS (SUBJECT)] {19}\r\n\
          Subject: doomed\r\n\
          \r\n\
          \x20ENVELOPE (NIL \"doomed\" NIL NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL) BINARY.SIZE[1] 0)\r\n",
    ),
    (
        "header_fields_quoted_and_escaped",
        "FETCH 2 (BODY.PEEK[HEADER.FIELDS (\"x-foo\" \"Sub ject\")] BODY.PEEK[HEADER.FIELDS (\"A\\\"B\")])",
        99,
        b"* 2 FETCH (BODY[HEADER.FIELDS (\"X-FOO\" \"SUB JECT\")] {2}\r\n\
          \r\n\
          \x20BODY[HEADER.FIELDS (\"A\\\"B\")] {2}\r\n\
          \r\n\
          )\r\n",
    ),
    (
        "empty_literals",
        "FETCH 1 (BODY.PEEK[]<1000.20> BODY.PEEK[TEXT]<0.0> BINARY.SIZE[])",
        70,
        b"* 1 FETCH (BODY[]<1000> {0}\r\n\
          \x20BODY[TEXT]<0> {0}\r\n\
          \x20BINARY.SIZE[] 227)\r\n",
    ),
];
