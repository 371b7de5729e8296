//! How `imapmux ctl` shows answers: tables for listings (one merged table
//! for every replica, with a REPLICA column), one line per replica for
//! actions, or the answers as JSON.

use serde_json::{json, Value};

use super::ctl::{Answer, BackendCommand, CacheCommand, CtlCommand};

/// Every replica's answer: `[{"replica", "status", "response"} | {"replica", "error"}]`.
pub(super) fn json(answers: &[Answer]) -> String {
    let list: Vec<Value> = answers
        .iter()
        .map(|a| match &a.result {
            Ok((status, v)) => json!({"replica": a.replica, "status": status, "response": v}),
            Err(e) => json!({"replica": a.replica, "error": e}),
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&list).unwrap_or_default();
    s.push('\n');
    s
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A left-aligned table with a header row.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn age(since: u64, now: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// Failed replicas, one line each (to stderr in spirit: printed after the table).
fn failures(answers: &[Answer]) -> String {
    let mut out = String::new();
    for a in answers {
        match &a.result {
            Ok((200, _)) => {}
            Ok((status, v)) => out.push_str(&format!(
                "{}: error {status}: {}\n",
                a.replica,
                text(&v["error"])
            )),
            Err(e) => out.push_str(&format!("{}: error: {e}\n", a.replica)),
        }
    }
    out
}

fn ok_bodies(answers: &[Answer]) -> impl Iterator<Item = (&str, &Value)> {
    answers.iter().filter_map(|a| match &a.result {
        Ok((200, v)) => Some((a.replica.as_str(), v)),
        _ => None,
    })
}

pub(super) fn human(cmd: &CtlCommand, answers: &[Answer]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = match cmd {
        CtlCommand::Sessions { .. } => {
            let mut rows = Vec::new();
            for (replica, v) in ok_bodies(answers) {
                for s in v["sessions"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        replica.to_string(),
                        text(&s["user"]),
                        text(&s["client"]),
                        text(&s["tls"]),
                        text(&s["backend"]),
                        text(&s["state"]),
                        text(&s["mailbox"]),
                        age(s["since"].as_u64().unwrap_or(now), now),
                        text(&s["bytes_in"]),
                        text(&s["bytes_out"]),
                    ]);
                }
            }
            table(
                &[
                    "REPLICA", "USER", "CLIENT", "TLS", "BACKEND", "STATE", "MAILBOX", "AGE", "IN",
                    "OUT",
                ],
                &rows,
            )
        }
        CtlCommand::Backend {
            command: BackendCommand::List,
        } => {
            let mut rows = Vec::new();
            for (replica, v) in ok_bodies(answers) {
                for b in v["backends"].as_array().into_iter().flatten() {
                    rows.push(
                        [
                            "name", "pool", "address", "up", "drained", "weight", "sessions",
                        ]
                        .iter()
                        .map(|k| text(&b[*k]))
                        .fold(vec![replica.to_string()], |mut r, c| {
                            r.push(c);
                            r
                        }),
                    );
                }
            }
            table(
                &[
                    "REPLICA", "BACKEND", "POOL", "ADDRESS", "UP", "DRAINED", "WEIGHT", "SESSIONS",
                ],
                &rows,
            )
        }
        CtlCommand::Cache {
            command: CacheCommand::Stats,
        } => {
            let keys = [
                "enabled",
                "entries",
                "bytes",
                "hits",
                "misses",
                "fills",
                "evictions",
            ];
            let rows: Vec<Vec<String>> = ok_bodies(answers)
                .map(|(replica, v)| {
                    keys.iter()
                        .map(|k| text(&v[*k]))
                        .fold(vec![replica.to_string()], |mut r, c| {
                            r.push(c);
                            r
                        })
                })
                .collect();
            table(
                &[
                    "REPLICA",
                    "ENABLED",
                    "ENTRIES",
                    "BYTES",
                    "HITS",
                    "MISSES",
                    "FILLS",
                    "EVICTIONS",
                ],
                &rows,
            )
        }
        _ => {
            // An action: one line per replica with what it did.
            let mut s = String::new();
            for (replica, v) in ok_bodies(answers) {
                let mut parts: Vec<String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.as_str() != "instance")
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect();
                parts.sort();
                s.push_str(&format!(
                    "{replica} ({}): ok {}\n",
                    text(&v["instance"]),
                    parts.join(" ")
                ));
            }
            s
        }
    };
    out.push_str(&failures(answers));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_sessions_table_and_failures() {
        let answers = vec![
            Answer {
                replica: "10.0.0.1:9143".into(),
                result: Ok((
                    200,
                    json!({"instance": "a", "sessions": [
                        {"user": "alice", "client": "1.2.3.4:5", "tls": "TLSv1.3", "backend": "b1",
                         "state": "parked", "mailbox": "INBOX", "since": 0, "bytes_in": 10, "bytes_out": 20}
                    ]}),
                )),
            },
            Answer {
                replica: "10.0.0.2:9143".into(),
                result: Ok((401, json!({"error": "missing or wrong token"}))),
            },
            Answer {
                replica: "10.0.0.3:9143".into(),
                result: Err("connection refused".into()),
            },
        ];
        let out = human(
            &CtlCommand::Sessions {
                user: None,
                backend: None,
            },
            &answers,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("REPLICA"), "{out}");
        assert!(
            lines[1].contains("alice") && lines[1].contains("parked"),
            "{out}"
        );
        assert!(lines[2].contains("10.0.0.2:9143: error 401: missing or wrong token"));
        assert!(lines[3].contains("10.0.0.3:9143: error: connection refused"));
        let j: Value = serde_json::from_str(&json(&answers)).unwrap();
        assert_eq!(j[0]["response"]["sessions"][0]["user"], "alice");
        assert_eq!(j[2]["error"], "connection refused");
    }
}
