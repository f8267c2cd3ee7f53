//! Integration tests: the real listener, store, workers and clients over loopback sockets,
//! against the simulators of `src/sim`, and the real binary where a process boundary matters
//! (start-up errors, kill and restart, the demo).

mod auth;
mod binary;
mod breaker;
mod callbacks;

mod check;
mod coalesce;
mod contrib;
mod control_chars;
mod damaged_store;
mod failures;
mod filter;
mod flood;
mod flow;
mod freeradius;
mod harness;
mod ingress;
mod limits;
mod logs;
mod metrics;
mod outbound;
mod pause;
mod readiness;
mod reconcile;
mod render;
mod robustness;

mod send;
mod sim;
mod sim_modes;
mod sim_systems;
mod simulate;
mod support;
mod template;
mod templates_shipped;
mod tls;
