//! The one tokio runtime shared by every element of the collection in a
//! process: network work (inference requests, gRPC, HTTP servers, database
//! writes) runs here, never on a streaming thread.

use std::sync::LazyLock;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get().clamp(2, 4))
                .unwrap_or(2),
        )
        .thread_name("rtai-runtime")
        .enable_all()
        .build()
        .expect("the tokio runtime starts (threads and an I/O driver are available)")
});

/// Makes ring the process's rustls crypto provider (idempotent). HTTP clients (reqwest)
/// need one installed; tonic and reqwest then agree on it.
pub fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The shared runtime; created on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    &RUNTIME
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_runs_tasks_off_the_calling_thread() {
        let caller = std::thread::current().id();
        let worker = super::runtime().block_on(async {
            tokio::spawn(async { std::thread::current().id() })
                .await
                .unwrap()
        });
        assert_ne!(caller, worker);
    }
}
