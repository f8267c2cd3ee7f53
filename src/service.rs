//! Wiring: store, PortaBilling and ESPF clients, target, workers and listener, started in
//! that order and stopped in reverse.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::error::Error;
use crate::espf::EspfClient;
use crate::http::{self, Server};
use crate::ingress::Ingress;
use crate::monitor::Monitor;
use crate::pipeline::{Ctx, Pipeline, Step};
use crate::portabilling::PbClient;
use crate::store::{Store, WriterThread};
use crate::target::HttpTarget;

/// A running espfd.
pub struct Service {
    server: Server,
    pipeline: Pipeline,
    ctx: Arc<Ctx>,
    writer: WriterThread,
}

impl Service {
    /// Starts everything. `observer` receives a [`Step`] for each thing that happens to an
    /// event (used by `espfd demo` and tests).
    pub fn start(config: &Config, observer: Option<Sender<Step>>) -> Result<Service, Error> {
        let (store, writer) = Store::open(&config.state_dir, config.workers)?;
        let pb = Arc::new(PbClient::new(config)?);
        let espf = EspfClient::new(config, pb.clone())?;
        let target = HttpTarget::new(&config.target_url, config.target_timeout, config.workers)?;
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            pb,
            espf,
            target,
            group: config.group.clone(),
            retry_max_age_ms: config.retry_max_age.as_millis() as i64,
            retry_initial_ms: config.retry_initial.as_millis() as i64,
            retry_max_delay_ms: config.retry_max_delay.as_millis() as i64,
            observer: observer.clone(),
        });
        let listener = TcpListener::bind(config.listen).map_err(|e| {
            Error::io(
                format!("ESPFD_LISTEN: cannot listen on {}", config.listen),
                e,
            )
        })?;
        let pipeline =
            Pipeline::start(ctx.clone()).map_err(|e| Error::io("cannot start workers", e))?;
        let ingress = Ingress {
            events_path: config.events_path.clone(),
            auth: config.auth.clone(),
            store,
            wakers: pipeline.wakers(),
            observer,
        };
        let handler = Monitor::new(
            Arc::new(ingress),
            &config.events_path,
            ctx.store.clone(),
            ctx.pb.clone(),
        );
        let server = http::serve(listener, config.limits.clone(), Arc::new(handler))
            .map_err(|e| Error::io("cannot start the listener", e))?;
        log::info!(
            "espfd {} listening on {} (events at {}), {} workers, store {}",
            env!("CARGO_PKG_VERSION"),
            server.local_addr(),
            config.events_path,
            config.workers,
            ctx.store.path().display()
        );
        Ok(Service {
            server,
            pipeline,
            ctx,
            writer,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Successful PortaBilling logins so far.
    pub fn pb_logins(&self) -> u64 {
        self.ctx.pb.logins()
    }

    /// Stops accepting, answers requests in flight, lets workers finish the event in hand,
    /// and closes the store. Unfinished events stay stored for the next start.
    pub fn shutdown(mut self, grace: Duration) {
        self.server.shutdown(grace);
        drop(self.server);
        self.pipeline.stop();
        drop(self.ctx);
        self.writer.join();
        log::info!("espfd stopped");
    }
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(config: &Config) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Error::io("cannot install signal handlers", e))?;
    }
    // SIGHUP (the init scripts' reload) must not end the process, its default action.
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let service = Service::start(config, None)?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if hup.swap(false, Ordering::SeqCst) {
            log::info!("SIGHUP received");
        }
    }
    log::info!("signal received; shutting down");
    service.shutdown(Duration::from_secs(10));
    Ok(())
}
