//! Helpers shared by the fuzz targets (fuzz_targets/*.rs).

/// xorshift64*: deterministic chunk sizes and choices from a seed byte, so
/// that a crash reproduces from the input file alone.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Cut `input` into the pieces a socket might deliver. `seed` 0 gives the
/// whole input at once; otherwise its low bits pick the largest piece
/// (1 byte … 4 KiB) and the rest the random sizes below it.
pub fn chunks(input: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || input.is_empty() {
        return vec![input];
    }
    let max = [1usize, 2, 3, 7, 16, 61, 512, 4096][usize::from(seed & 7)];
    let mut rng = Rng::new(u64::from(seed));
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// `input` with every run of one repeated byte (2 or more) stretched by the
/// same factor, so that the result is about `max` bytes: `a ID ((x` becomes
/// `a ID ` + thousands of `(` + `x`. Nesting depth and running time give
/// the fuzzer no new coverage to follow, so a target also tries its input
/// stretched; deep recursion and superlinear time then show up. `None`
/// when there is nothing to stretch.
pub fn stretch(input: &[u8], max: usize) -> Option<Vec<u8>> {
    let runs = input.chunk_by(|a, b| a == b);
    let repeated: usize = runs.clone().map(<[u8]>::len).filter(|n| *n >= 2).sum();
    if repeated == 0 || input.len() >= max {
        return None;
    }
    let factor = (max - (input.len() - repeated)) / repeated;
    if factor < 2 {
        return None;
    }
    let mut out = Vec::with_capacity(max);
    for run in runs {
        let times = if run.len() >= 2 { factor } else { 1 };
        for _ in 0..times {
            out.extend_from_slice(run);
        }
    }
    Some(out)
}

/// What imapmux writes to a client must be whole IMAP lines: every line
/// ends with CRLF and no CR, LF or NUL occurs anywhere else (a stray one
/// would let a peer inject a response line).
pub fn assert_crlf_lines(bytes: &[u8]) {
    assert!(
        bytes.ends_with(b"\r\n"),
        "output does not end with CRLF: {:?}",
        String::from_utf8_lossy(bytes)
    );
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let body = line
            .strip_suffix(b"\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {:?}", String::from_utf8_lossy(line)));
        assert!(
            !body.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "CR, LF or NUL inside a line: {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(!body.is_empty(), "empty line in output");
    }
}

/// Text that goes into a response line: no CR, LF or NUL.
pub fn assert_line_safe(text: &str) {
    assert!(
        !text.contains(['\r', '\n', '\0']),
        "CR, LF or NUL in response text: {text:?}"
    );
}

/// Tokio's default worker thread stack (2 MiB): the stack imapmux's
/// sessions run on, so the one parsers must not overflow.
pub const TOKIO_STACK: usize = 2 * 1024 * 1024;

/// Give the calling thread an alternate signal stack, so that a SIGSEGV
/// handler can run after a stack overflow.
fn alt_signal_stack() -> bool {
    const SIZE: usize = 256 * 1024;
    // Kept reachable from a static, so leak checkers at exit (libFuzzer's
    // -detect_leaks) do not report the signal stack as a leak.
    static ALT_STACK: std::sync::atomic::AtomicPtr<u8> =
        std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
    ALT_STACK.store(stack.as_mut_ptr(), std::sync::atomic::Ordering::Relaxed);
    // A static that is only written may lose the store to the optimizer.
    std::hint::black_box(&ALT_STACK);
    let ss = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: SIZE,
    };
    // SAFETY: the stack is leaked, so it outlives the thread.
    unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) == 0 }
}

/// Make a stack overflow a reported crash, with its input saved.
///
/// Without a sanitizer nothing gives the main thread an alternate signal
/// stack, so libFuzzer's SIGSEGV handler would run on the overflowed stack
/// and the process would die silently (no `crash-…` file). This gives the
/// thread one and re-installs libFuzzer's handler with `SA_ONSTACK`. Call it
/// first in every target (only the first call does anything).
pub fn report_stack_overflows() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !alt_signal_stack() {
            return;
        }
        // SAFETY: the handler installed is the one already there, with one
        // more flag.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut sa) != 0
                || sa.sa_sigaction == libc::SIG_DFL
                || sa.sa_sigaction == libc::SIG_IGN
            {
                return;
            }
            sa.sa_flags |= libc::SA_ONSTACK;
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
    });
}

type Job = Box<dyn FnOnce() + Send>;

/// Run `job` on a thread with tokio's stack size ([`TOKIO_STACK`]) and wait
/// for it, so that recursion too deep for a session's stack is a finding
/// even though libFuzzer's own thread has 8 MiB. One thread serves every
/// call (a new thread per input would halve the speed).
pub fn on_tokio_stack(job: impl FnOnce() + Send + 'static) {
    use std::sync::{mpsc, Mutex, OnceLock};
    static WORKER: OnceLock<Mutex<(mpsc::Sender<Job>, mpsc::Receiver<()>)>> = OnceLock::new();
    report_stack_overflows();
    let worker = WORKER.get_or_init(|| {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (done, finished) = mpsc::channel();
        std::thread::Builder::new()
            .name("tokio-sized".into())
            .stack_size(TOKIO_STACK)
            .spawn(move || {
                alt_signal_stack();
                for job in inbox {
                    job();
                    let _ = done.send(());
                }
            })
            .expect("spawn the worker thread");
        Mutex::new((jobs, finished))
    });
    let w = worker.lock().expect("worker lock");
    w.0.send(Box::new(job)).expect("worker thread gone");
    w.1.recv().expect("worker thread gone");
}
