//! Wake-ups: how an idle worker learns that there may be work. The store stays the truth; a missed wake-up
//! only costs latency, bounded by the poll interval.

mod postgres;

pub use postgres::PgWaker;
