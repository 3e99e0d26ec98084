pub mod lease;
pub mod log;
