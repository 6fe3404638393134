//! How background tasks (the database writer, the Redis publisher, the HTTP
//! server) tell their owner about problems: a small interface, so they depend
//! on it and not on the element that runs them. `analyticssink` implements it
//! with warnings on itself; another element (abrsink's delivery) can too.

/// Receives the problems of a background task. Messages never carry secrets
/// (URLs are redacted by the caller).
pub trait Reporter: Send + Sync + 'static {
    /// Something an operator should see (a write failed, a server is exposed).
    fn warning(&self, msg: &str);
    /// Detail for debugging (each rejected event after the first, …).
    fn debug(&self, msg: &str);
}
