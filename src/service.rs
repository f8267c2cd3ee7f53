//! Wiring: store, PortaBilling and ESPF clients, target, workers and listener, started in
//! that order and stopped in reverse.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::connector::Connector;
use crate::error::Error;
use crate::espf::EspfClient;
use crate::http::{self, Server, Tls};
use crate::ingress::{Health, Ingress};
use crate::metrics::Metrics;
use crate::pause::PauseWatch;
use crate::pipeline::{Ctx, Pace, Pipeline, RetryPolicy, Step};
use crate::portabilling::PbClient;
use crate::store::{Store, WriterThread};
use crate::upstream::Upstreams;

/// A running espfd.
pub struct Service {
    server: Server,
    tls: Option<Arc<Tls>>,
    pipeline: Pipeline,
    ctx: Arc<Ctx>,
    writer: WriterThread,
    janitor: Janitor,
    pause: PauseWatch,
}

/// Deletes finished events older than `ESPFD_RETENTION`, so the store does not grow forever
/// on an appliance's disk. Stops when its sender is dropped.
struct Janitor {
    stop: crossbeam_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Janitor {
    fn start(store: Store, retention: Duration) -> std::io::Result<Janitor> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        // Often enough that the store holds at most a little more than the retention.
        let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(3600));
        let thread = std::thread::Builder::new()
            .name("janitor".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let before = crate::util::now_ms() - retention.as_millis() as i64;
                    let mut deleted = 0;
                    loop {
                        match store.purge(before) {
                            Ok(n) => {
                                deleted += n;
                                if n < crate::store::PURGE_BATCH {
                                    break;
                                }
                            }
                            Err(e) => {
                                log::error!("deleting old events failed: {e}");
                                break;
                            }
                        }
                    }
                    if deleted > 0 {
                        log::info!(
                        "deleted {deleted} events finished more than {} s ago (ESPFD_RETENTION)",
                        retention.as_secs()
                    );
                    }
                }
            })?;
        Ok(Janitor { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl Service {
    /// Starts everything. `observer` receives a [`Step`] for each thing that happens to an
    /// event (used by `espfd demo` and tests).
    pub fn start(config: &Config, observer: Option<Sender<Step>>) -> Result<Service, Error> {
        // The certificate first: a bad one must stop the start before anything else happens.
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(Tls::load(&files.cert, &files.key)?)),
            None => None,
        };
        let (store, writer) = Store::open(&config.state_dir, config.workers)?;
        // Read before the workers start: a service started while paused takes nothing.
        let (pause, pause_watch) = PauseWatch::start(&store)?;
        // This service's counters: every part that counts is handed the one registry.
        let metrics = Arc::new(Metrics::new());
        let pb = Arc::new(
            PbClient::new(&config.pb)?
                .with_metrics(metrics.clone())
                .with_upstreams(Arc::new(Upstreams::new(config.breaker_failures))),
        );
        let espf = EspfClient::new(&config.espf, pb.clone())?.with_metrics(metrics.clone());
        let connector = Connector::new(&config.connector, pb.clone())?;
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            pb,
            espf,
            connector,
            group: config.group.clone(),
            coalesce: config.coalesce,
            retry: RetryPolicy {
                initial: config.retry_initial,
                max_delay: config.retry_max_delay,
                max_age: config.retry_max_age,
                async_timeout: config.async_timeout,
            },
            observer: observer.clone(),
            metrics: metrics.clone(),
            pause: pause.clone(),
            pace: Arc::new(Pace::default()),
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
            event_types: config.event_types.clone(),
            store,
            wakers: pipeline.wakers(),
            observer,
            callback_token: config.callback_token.clone(),
            health: Health::new(ctx.store.clone(), ctx.pb.clone(), metrics.clone())
                .with_pause(pause),
            metrics: metrics.clone(),
        };
        let options = http::Options {
            limits: config.limits.clone(),
            tls: tls.clone(),
            allow_from: config.allow_from.clone(),
            metrics: Some(metrics),
        };
        let server = http::serve_with(listener, options, Arc::new(ingress))
            .map_err(|e| Error::io("cannot start the listener", e))?;
        if let Some(t) = &tls {
            log::info!(
                "HTTPS with the certificate in {} (SHA-256 {})",
                t.files().0.display(),
                t.fingerprint()
            );
        }
        if !config.event_types.takes_all() {
            // Each skipped event is logged at debug level only; say once what is skipped.
            log::info!(
                "provisioning only event types {}; others are answered 200 and stored as \
                 skipped (ESPFD_EVENT_TYPES)",
                config.event_types
            );
        }
        if !config.allow_from.allows_everyone() {
            log::info!("accepting connections only from {}", config.allow_from);
        }
        log::info!(
            "espfd {} listening on {}{} (events at {}), {} workers, store {}",
            env!("CARGO_PKG_VERSION"),
            server.local_addr(),
            if tls.is_some() { " (HTTPS)" } else { "" },
            config.events_path,
            config.workers,
            ctx.store.path().display()
        );
        let janitor = Janitor::start(ctx.store.clone(), config.retention)
            .map_err(|e| Error::io("cannot start the janitor thread", e))?;
        Ok(Service {
            server,
            tls,
            pipeline,
            ctx,
            writer,
            janitor,
            pause: pause_watch,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Reloads what can change without a restart: the TLS certificate and key, read again
    /// from their files (SIGHUP calls this). If they are bad, the previous ones stay in use
    /// and the error says why. The listener and open connections are not touched.
    pub fn reload(&self) -> Result<(), Error> {
        let Some(tls) = &self.tls else {
            log::info!("reload: nothing to reload (no ESPFD_TLS_CERT)");
            return Ok(());
        };
        match tls.reload() {
            Ok(()) => {
                log::info!(
                    "reload: TLS certificate reloaded from {} (SHA-256 {})",
                    tls.files().0.display(),
                    tls.fingerprint()
                );
                Ok(())
            }
            Err(e) => {
                log::error!(
                    "reload: {e}; still serving the previous certificate (SHA-256 {})",
                    tls.fingerprint()
                );
                Err(e)
            }
        }
    }

    /// Successful PortaBilling logins so far.
    pub fn pb_logins(&self) -> u64 {
        self.ctx.pb.logins()
    }

    /// Stops accepting, answers requests in flight, lets workers finish the event in hand,
    /// all within `grace`, and closes the store. Whatever is unfinished stays stored for the
    /// next start.
    pub fn shutdown(mut self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        self.server.shutdown(grace);
        drop(self.server);
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let busy = self.pipeline.stop(left);
        if busy > 0 {
            log::warn!("{busy} event(s) still in flight after ESPFD_SHUTDOWN_GRACE; they stay in the store and run again on the next start");
        }
        self.janitor.stop();
        self.pause.stop();
        drop(self.ctx);
        self.writer.join();
        log::info!("espfd stopped");
    }
}

/// Installs the logger as configured, then runs the service until SIGTERM or SIGINT; SIGHUP
/// reloads the TLS certificate and key.
pub fn run(config: &Config) -> Result<(), Error> {
    crate::logging::init_for(config.log_format, &config.redact);
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
        if hup.swap(false, Ordering::SeqCst) {
            log::info!("SIGHUP received; reloading");
            // The outcome is logged; a failed reload keeps the service running as it was.
            let _ = service.reload();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log::info!("signal received; shutting down");
    service.shutdown(config.shutdown_grace);
    Ok(())
}
