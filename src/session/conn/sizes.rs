//! What a parked session's futures cost (issue 16, item 7: memory per
//! parked client). While parked, a session's futures are its task (the
//! `serve` future, inline in tokio's task cell), the boxed `park` future
//! and the boxed `ParkedSession`, besides the TLS connection (its own
//! allocations). A future is as large as its largest state, so a
//! rarely-used big state (a backend login, a resync) kept inline would be
//! paid by every parked client: those are boxed.

use super::*;
use crate::multiplex::park::Parking;
use crate::multiplex::parked::ParkedSession;

/// Size of the future an async fn of `N` arguments returns, without
/// calling it.
fn fut4<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut5<A, B, C, D, E, F>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut6<A, B, C, D, E, G, F>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut7<A, B, C, D, E, G, H, F>(_: impl FnOnce(A, B, C, D, E, G, H) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn a_parked_session_keeps_small_futures() {
    let serve = fut5(serve);
    let park = fut4(Parking::park);
    let parked = std::mem::size_of::<ParkedSession>();
    let total = serve + park + parked;
    let breakdown = format!(
        "serve {serve} + park {park} + ParkedSession {parked} = {total} bytes \
         (run {}, release {}, relay {})",
        fut6(run),
        fut6(crate::multiplex::Multiplex::release),
        fut7(crate::relay::relay::<ClientStream, backend::BoxStream>),
    );
    eprintln!("{breakdown}");
    // 6,888 bytes before the big states were boxed (park 4,248, a boxed
    // after_relay 1,464 around it); 3,352 after (release and debug builds
    // alike).
    assert!(total <= 4096, "{breakdown}");
    // The one a login, a resync or a re-attach would bloat.
    assert!(park <= 2048, "{breakdown}");
}
