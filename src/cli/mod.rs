//! Subcommands other than the service itself.

pub mod check;
pub mod demo;
pub mod events;
pub mod load;
pub mod pause;
pub mod reconcile;
pub mod render;
pub mod send;
pub mod simulate;

/// `espfd --help`.
pub const USAGE: &str = "\
espfd — provisioning agent for PortaBilling's External System Provisioning Framework (ESPF)

Usage:
  espfd [run]        run the service (configured by environment variables)
  espfd demo         run the whole flow on this machine against built-in simulators
  espfd events ...   list / show / replay stored events (espfd events --help)
  espfd pause [--reason TEXT]
                     stop everything that goes upstream (a maintenance window); events are
                     still stored (espfd pause --help)
  espfd resume       end the pause; what waited is delivered
  espfd reconcile (--all | --customer N | --id PATTERN) [--rate R] [--dry-run]
                     provision PortaBilling's accounts again, paced, after ESPF's events
                     (espfd reconcile --help)
  espfd check        validate the configuration and try every connection; exit 0 when all pass
  espfd render ...   show (or --send) the requests the connector makes for one event
                     (espfd render --help)
  espfd simulate     simulated PortaBilling + ESPF API + target, standalone (--help for options)
  espfd send [URL]   POST test events to a running espfd, any auth scheme, HTTP or HTTPS;
                     also a load generator (espfd send --help)
  espfd help env     list every environment variable with its default
  espfd --help       this text
  espfd --version    the version

ESPF POSTs each provisioning event to espfd; espfd stores it durably, looks the entity up
in the PortaBilling API, sends it to the external system (ESPFD_TARGET_URL, _EXEC or _TEMPLATE) and reports
the provisioning status back through the ESPF API. See README.md.
";
