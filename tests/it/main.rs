//! Integration tests: the real listener, store, workers and clients over loopback sockets,
//! against the simulators of `src/sim`, and the real binary where a process boundary matters
//! (start-up errors, kill and restart, the demo).

mod binary;
mod flow;
mod harness;
mod ingress;
mod robustness;
mod send;
