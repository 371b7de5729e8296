use super::*;

#[test]
fn devices_one_to_three_summing_to_clients() {
    let mut rng = Rng::new(3);
    for (clients, users) in [(2000, 1000), (10_000, 5000), (10, 10), (30, 10), (11, 10)] {
        let per_user = assign_devices(clients, users, &mut rng).unwrap();
        assert_eq!(per_user.len(), users);
        assert_eq!(per_user.iter().sum::<usize>(), clients);
        assert!(per_user.iter().all(|&n| (1..=3).contains(&n)));
    }
    // C = 2U: about a quarter / half / a quarter with 1 / 2 / 3 devices.
    let per_user = assign_devices(20_000, 10_000, &mut rng).unwrap();
    let count = |k| per_user.iter().filter(|&&n| n == k).count();
    assert!((2200..2800).contains(&count(1)), "{}", count(1));
    assert!((4500..5500).contains(&count(2)), "{}", count(2));
    assert!((2200..2800).contains(&count(3)), "{}", count(3));
    assert!(assign_devices(9, 10, &mut rng).is_err());
    assert!(assign_devices(31, 10, &mut rng).is_err());
    assert!(assign_devices(1, 0, &mut rng).is_err());
}

#[test]
fn client_order_keeps_every_device() {
    let mut rng = Rng::new(5);
    let per_user = vec![1, 3, 2];
    let order = client_users(&per_user, &mut rng);
    assert_eq!(order.len(), 6);
    for (u, &n) in per_user.iter().enumerate() {
        assert_eq!(order.iter().filter(|&&x| x == u).count(), n);
    }
    // Deterministic for a seed.
    assert_eq!(order, client_users(&per_user, &mut Rng::new(5)));
}

#[test]
fn refresh_intervals_around_the_mean() {
    let mut rng = Rng::new(9);
    let mean = Duration::from_secs(60);
    let mut sum = 0.0;
    for _ in 0..10_000 {
        let r = refresh_interval(mean, &mut rng);
        assert!(r >= Duration::from_secs(30) && r < Duration::from_secs(90));
        sum += r.as_secs_f64();
    }
    let avg = sum / 10_000.0;
    assert!((58.0..62.0).contains(&avg), "{avg}");
}

#[test]
fn poisson_arrivals_at_the_rate() {
    let mut rng = Rng::new(11);
    let total: f64 = (0..20_000)
        .map(|_| next_arrival(4.0, &mut rng).as_secs_f64())
        .sum();
    // 20,000 arrivals at 4/s take about 5,000 s.
    assert!((4800.0..5200.0).contains(&total), "{total}");
    assert_eq!(next_arrival(0.0, &mut rng), FOREVER);
}

#[test]
fn login_lines() {
    let log =
        b"Dec 04 19:00:00 imap-login: Info: Login: user=<user1>, method=PLAIN, rip=127.0.0.1\n\
Dec 04 19:00:00 imap(user1)<1><x>: Info: Disconnected: Logged out in=10 out=20\n\
Dec 04 19:00:01 imap-login: Info: Disconnected (auth failed, 1 attempts in 0 secs): user=<user2>\n\
Dec 04 19:00:02 imap-login: Info: Login: user=<user3>, method=PLAIN\n\
Dec 04 19:00:02 imap(user3): Info: Login: user=<fake> in a mail subject\n";
    assert_eq!(count_logins(log), 2);
    assert_eq!(count_logins(b""), 0);
}

#[test]
fn metrics_text() {
    let text = "# HELP imapmux_parks_total x\n# TYPE imapmux_parks_total counter\n\
imapmux_parks_total 12\n\
imapmux_wakes_total{cause=\"done\"} 3\nimapmux_wakes_total{cause=\"push\"} 4.5\n\
imapmux_backend_login_duration_seconds_bucket{backend=\"a\",le=\"0.1\"} 9\n\
imapmux_backend_login_duration_seconds_count{backend=\"a\"} 9\n\
imapmux_odd{x=\"a b}\"} 1\n";
    let m = parse_metrics(text);
    assert_eq!(m["imapmux_parks_total"], 12.0);
    assert_eq!(m["imapmux_wakes_total"], 7.5);
    assert_eq!(m["imapmux_backend_login_duration_seconds_count"], 9.0);
    assert!(!m.contains_key("imapmux_backend_login_duration_seconds_bucket"));
    assert_eq!(m["imapmux_odd"], 1.0);
    assert_eq!(
        split_url("http://127.0.0.1:9143/metrics").unwrap(),
        ("127.0.0.1:9143".to_string(), "/metrics".to_string())
    );
    assert_eq!(split_url("http://h:1").unwrap().1, "/metrics");
    assert!(split_url("https://h/metrics").is_err());
}

#[test]
fn settling() {
    assert!(still_falling(&[], 3));
    assert!(still_falling(&[10, 20, 30], 3));
    assert!(still_falling(&[100, 150, 200, 250, 300, 350], 3));
    assert!(!still_falling(&[60, 61, 59, 62, 60, 61], 3));
    // Rising (new mail re-attaching) is not falling.
    assert!(!still_falling(&[70, 66, 64, 62, 61, 60], 3));
    assert!(!still_falling(&[2000; 6], 10));
}

#[test]
fn peak_and_mean_of_a_window() {
    let s = [(0.5, 100), (1.5, 4), (2.5, 6), (3.5, 50)];
    assert_eq!(peak_mean(&s, 1.0, 3.0), (6, 5.0));
    assert_eq!(peak_mean(&s, 10.0, 11.0), (0, 0.0));
}

#[test]
fn board_attributes_exists_to_deliveries() {
    let live = Arc::new(crate::stats::Live::default());
    let now = Instant::now();
    let rec = Rec::new(Recorder::new(live, now, now + FOREVER));
    let b = Board::new(2);
    let a = b.sent(0);
    b.finished(0, a, Some(Instant::now()));
    let f = b.sent(0);
    b.finished(0, f, None); // failed: never in the mailbox
    let c = b.sent(0);
    b.finished(0, c, Some(Instant::now()));
    // A client that saw nothing yet learns of 2 new messages.
    let mut next = 0;
    b.saw(0, &mut next, 2, &rec);
    assert_eq!(next, 3);
    let mut next2 = 0;
    b.saw(0, &mut next2, 1, &rec);
    let (n, expected, seen) = b.totals(&[2, 1]);
    assert_eq!((n, expected, seen), (2, 4, 3));
    // More EXISTS than deliveries: counted, not attributed.
    b.saw(1, &mut 0, 1, &rec);
    let mut t = Recorder::new(Arc::new(crate::stats::Live::default()), now, now + FOREVER);
    rec.merge_into(&mut t);
    assert_eq!(t.counters["exists_unexplained"], 1);
    assert_eq!(t.hists["NEWMAIL"].len(), 3);
}
