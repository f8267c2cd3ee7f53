//! espfd — the "Application" of PortaBilling's External System Provisioning Framework (ESPF).
//!
//! ESPF POSTs provisioning events; espfd stores each one durably, looks its entity up in the
//! PortaBilling API, pushes it to an external system (the target), and reports the
//! provisioning status back through the ESPF API. See README.md for the operator's view.
//!
//! Modules, roughly in the order an event meets them: [`http`] (the listener), [`ingress`]
//! (auth, validation, the event filter [`filter`]), [`event`], [`store`], [`pipeline`] (lanes and workers),
//! [`portabilling`], [`enrich`] (one attempt's context for the connector), [`connector`],
//! [`espf`]; around them [`config`], [`service`] (wiring), [`outbound`] (agents) and [`token`]
//! (the shared single-flight token: the PortaBilling session, the target's OAuth 2.0 token),
//! [`upstream`] (a circuit breaker per upstream), [`pause`] (`espfd pause` as the service sees
//! it), [`sim`] (simulated PortaBilling, ESPF API and target) and [`cli`].

pub mod cli;
pub mod config;
pub mod connector;
pub mod enrich;
pub mod error;
pub mod espf;
pub mod event;
pub mod filter;
pub mod http;
pub mod ingress;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod pause;
pub mod pipeline;
pub mod portabilling;
pub mod redact;
pub mod service;
pub mod sim;
pub mod store;
pub mod token;
pub mod upstream;
pub mod util;
