//! The template connector (`ESPFD_TARGET_TEMPLATE`): the external system's own requests,
//! written in a `.http` file and rendered with MiniJinja for each event.
//!
//! A file is split into steps at `###` lines once, at start ([`parse`]); each step, and each
//! `< file` body beside the template, becomes a template of one MiniJinja environment
//! ([`render`]). For an event, the steps are rendered in order with the names of the
//! contract (event, entity, steps, pb(), setting(), secret() ...; see [`scope`]), sent
//! through the [`Sender`], and judged by their annotations. A step that renders to nothing
//! is not sent; an event with no step sent is skipped.
//!
//! One run serves three callers: the worker ([`TemplateConnector::deliver`]), and
//! `espfd render` with or without `--send` ([`TemplateConnector::run`]).

mod parse;
mod render;
mod scope;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use minijinja::{Environment, Value};

use super::judge::Verdict;
use super::send::{OutRequest, Reply, Sender};
use super::{ConnectorSettings, Outcome};
use crate::enrich::Context;
use crate::error::{ConfigError, Error};
use crate::espf::MAX_MESSAGE;
use crate::outbound::Failure;
use crate::portabilling::PbClient;
use crate::util::truncate_chars;
use parse::Step;
use render::Rendered;
use scope::PbCalls;

pub use render::{xml_escape, xml_text, FUEL};

/// How a run treats the requests it renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send every step (the worker, and `espfd render --send`).
    Send,
    /// Send nothing; a step that needs an earlier step's reply says so (`espfd render`).
    DryRun,
}

/// One step of a run, for `espfd render` to print.
#[derive(Debug, Clone)]
pub struct StepRun {
    /// `step lookup`, `step 'create it'`, `step 2`.
    pub label: String,
    /// The request as sent or as it would be sent, without the outbound authentication;
    /// `None` when the step rendered to nothing or failed to render.
    pub request: Option<OutRequest>,
    /// The `< file` the body came from.
    pub body_file: Option<String>,
    /// Whether the configured authentication applies (no `# @no-auth`).
    pub authenticated: bool,
    /// The reply, when sent.
    pub reply: Option<Reply>,
    /// Why a dry run stopped here, or what went wrong.
    pub note: Option<String>,
}

/// A run's steps and what they make of the event.
#[derive(Debug, Clone)]
pub struct Run {
    pub steps: Vec<StepRun>,
    /// `None` for a dry run that stopped at a step needing a reply.
    pub outcome: Option<Outcome>,
}

/// The template connector.
pub struct TemplateConnector {
    /// The template's file name, as messages name it.
    file: String,
    steps: Vec<Step>,
    /// Step and body sources, to point errors at the text they came from.
    sources: BTreeMap<String, String>,
    env: Environment<'static>,
    sender: Sender,
    pb: Arc<PbClient>,
    /// Every `ESPFD_SECRET_*` value and the target credentials: masked in shown requests.
    masked: Vec<String>,
}

impl TemplateConnector {
    /// Loads and checks the template at `path`: its steps, its annotations and every
    /// `< file` body beside it. `debug` keeps values in error details (`render`, `check`).
    pub fn load(
        path: &Path,
        settings: &ConnectorSettings,
        pb: Arc<PbClient>,
        debug: bool,
    ) -> Result<TemplateConnector, Error> {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let bad = |reason: String| {
            Error::Config(ConfigError {
                var: "ESPFD_TARGET_TEMPLATE".into(),
                reason,
            })
        };
        let source = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        if let Some((line, tag)) = parse::forbidden_tag(&source) {
            return Err(bad(format!(
                "{file} line {line}: {{% {tag} %}} is not allowed (a template reads no other file than its `< file` bodies)"
            )));
        }
        let steps = parse::steps(&source).map_err(|e| bad(format!("{file} {e}")))?;
        if steps.is_empty() {
            return Err(bad(format!(
                "{file} holds no request (steps start with ###)"
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut bodies = Vec::new();
        for (name, line) in parse::body_files(&steps) {
            let relative = Path::new(&name);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad(format!(
                    "{file} line {line}: < {name}: a body file is named relative to the template's directory, without ..",
                )));
            }
            let at: PathBuf = dir.join(relative);
            let text = std::fs::read_to_string(&at).map_err(|e| {
                bad(format!(
                    "{file} line {line}: < {name}: cannot read {}: {e}",
                    at.display()
                ))
            })?;
            if let Some((line, tag)) = parse::forbidden_tag(&text) {
                return Err(bad(format!(
                    "{name} line {line}: {{% {tag} %}} is not allowed"
                )));
            }
            bodies.push((name, text));
        }
        let env = render::environment(
            &steps,
            &bodies,
            Arc::new(settings.settings.clone()),
            Arc::new(settings.secrets.clone()),
            debug,
        )
        .map_err(|e| {
            let (name, src, first) = match e
                .name()
                .and_then(|n| steps.iter().find(|s| render::step_template(s) == n))
            {
                Some(step) => (file.clone(), step.text.clone(), step.line),
                None => (e.name().unwrap_or(&file).to_string(), String::new(), 1),
            };
            bad(render::describe(&e, &name, &src, first))
        })?;
        let mut sources: BTreeMap<String, String> = bodies.into_iter().collect();
        for step in &steps {
            sources.insert(render::step_template(step), step.text.clone());
        }
        for step in &steps {
            for (what, expr) in [("@ok-if", &step.ok_if), ("@message", &step.message)] {
                if let Some(expr) = expr {
                    env.compile_expression(expr).map_err(|e| {
                        bad(format!(
                            "{file} {}: {what} {expr}: {}",
                            step.label(),
                            e.detail().unwrap_or("does not parse")
                        ))
                    })?;
                }
            }
        }
        let mut masked: Vec<String> = settings
            .secrets
            .values()
            .map(|s| s.0.clone())
            .chain(settings.auth.secrets().into_iter().map(|s| s.0.clone()))
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        masked.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(TemplateConnector {
            file,
            steps,
            sources,
            env,
            sender: Sender::new(settings)?,
            pb,
            masked,
        })
    }

    /// Delivers one event: every step, in order.
    pub fn deliver(&self, context: &Context<'_>) -> Outcome {
        self.run(context, Mode::Send)
            .outcome
            .unwrap_or_else(|| Outcome::Failed(Failure::permanent("template run stopped")))
    }

    /// The template's file name.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// How many steps the file has.
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// The header the outbound authentication sets, if any.
    pub fn auth_header(&self) -> Option<String> {
        self.sender.auth_header()
    }

    /// Sends nothing: the sender, for `espfd check`.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// `text` with every secret value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.masked {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// Runs the steps for `context`. With [`Mode::DryRun`] nothing is sent.
    pub fn run(&self, context: &Context<'_>, mode: Mode) -> Run {
        let pb = PbCalls::new(self.pb.clone());
        let base = scope::base(context, &pb);
        let mut steps: BTreeMap<String, Value> = BTreeMap::new();
        let mut runs = Vec::new();
        let mut last: Option<(usize, Reply)> = None;
        for (index, step) in self.steps.iter().enumerate() {
            let label = step.label();
            let mut run = StepRun {
                label: label.clone(),
                request: None,
                body_file: None,
                authenticated: !step.no_auth,
                reply: None,
                note: None,
            };
            if mode == Mode::DryRun {
                if let Some(name) = self.needs(index) {
                    run.note = Some(format!("needs the reply of step {name}; use --send"));
                    runs.push(run);
                    continue;
                }
            }
            let scope = scope::with_steps(&base, &steps);
            let rendered = match self.render_step(step, &scope, &pb, context) {
                Ok(r) => r,
                Err(failure) => {
                    let message = self.mask(&failure.message);
                    run.note = Some(message.clone());
                    runs.push(run);
                    return Run {
                        steps: runs,
                        outcome: Some(Outcome::Failed(Failure { message, ..failure })),
                    };
                }
            };
            let (req, file) = match rendered {
                Rendered::Nothing => {
                    run.note = Some("renders to nothing: not sent".into());
                    runs.push(run);
                    continue;
                }
                Rendered::Request(req, file) => (req, file),
            };
            run.request = Some(req.clone());
            run.body_file = file;
            if mode == Mode::DryRun {
                runs.push(run);
                continue;
            }
            let reply = match self.sender.send(&req, !step.no_auth) {
                Ok(reply) => reply,
                Err(f) => {
                    let message = self.mask(&format!("{}: {}", label, f.message));
                    run.note = Some(message.clone());
                    runs.push(run);
                    return Run {
                        steps: runs,
                        outcome: Some(Outcome::Failed(Failure { message, ..f })),
                    };
                }
            };
            run.reply = Some(reply.clone());
            let response = scope::reply(&reply);
            if let Some(name) = &step.name {
                steps.insert(name.clone(), response.clone());
            }
            let judged = self.judge(step, &reply, &response, &scope);
            runs.push(run);
            match judged {
                Ok(()) => last = Some((index, reply)),
                Err(failure) => {
                    return Run {
                        steps: runs,
                        outcome: Some(Outcome::Failed(failure)),
                    }
                }
            }
        }
        let outcome = match (mode, last) {
            (Mode::DryRun, _) => None,
            (Mode::Send, None) => Some(Outcome::Skipped(format!(
                "{}: no step rendered a request",
                self.file
            ))),
            (Mode::Send, Some((index, reply))) => {
                let step = &self.steps[index];
                let scope = scope::with_steps(&base, &steps);
                let message =
                    self.message(step, &reply, &scope::reply(&reply), &scope, "provisioned");
                Some(if reply.status == 202 {
                    Outcome::Accepted(message)
                } else {
                    Outcome::Done(message)
                })
            }
        };
        Run {
            steps: runs,
            outcome,
        }
    }

    /// Renders one step and its `< file` body into the request to send.
    fn render_step(
        &self,
        step: &Step,
        scope: &Value,
        pb: &PbCalls,
        context: &Context<'_>,
    ) -> Result<Rendered, Failure> {
        let name = render::step_template(step);
        let text = self.render_named(&name, scope, pb)?;
        let mut rendered = render::request(&text, &format!("{} {}", self.file, step.label()))
            .map_err(Failure::permanent)?;
        if let Rendered::Request(req, Some(file)) = &mut rendered {
            let body = self.render_named(file, scope, pb)?;
            req.body = render::clean(&body).into_bytes();
            if let Some(ct) = render::content_type(file) {
                req.default_header("Content-Type", ct);
            }
        }
        if let Rendered::Request(req, _) = &mut rendered {
            req.default_header("Idempotency-Key", &context.i_event().to_string());
            req.default_header("User-Agent", concat!("espfd/", env!("CARGO_PKG_VERSION")));
        }
        Ok(rendered)
    }

    /// Renders the template `name`, classifying a `pb()` failure like a lookup failure.
    fn render_named(&self, name: &str, scope: &Value, pb: &PbCalls) -> Result<String, Failure> {
        let rendered = self.env.get_template(name).and_then(|t| t.render(scope));
        match rendered {
            Ok(text) => Ok(text),
            Err(err) => {
                if let Some(f) = pb.failure() {
                    return Err(f);
                }
                Err(Failure::permanent(self.describe(&err, name)))
            }
        }
    }

    /// `file line N: what` for an error in the template `name` (a step or a body file).
    fn describe(&self, err: &minijinja::Error, name: &str) -> String {
        let source = self.sources.get(name).map(String::as_str).unwrap_or("");
        match self.steps.iter().find(|s| render::step_template(s) == name) {
            Some(step) => render::describe(err, &self.file, source, step.line),
            None => render::describe(err, name, source, 1),
        }
    }

    /// The earlier named step whose reply step `index` (or a `< file` it names) uses, if
    /// any: a dry run cannot render it.
    fn needs(&self, index: usize) -> Option<&str> {
        let step = &self.steps[index];
        let mut texts = vec![step.text.as_str()];
        for line in step.text.lines() {
            if let Some(src) = parse::body_file(line).and_then(|f| self.sources.get(f)) {
                texts.push(src);
            }
        }
        self.steps[..index]
            .iter()
            .filter_map(|s| s.name.as_deref())
            .find(|name| {
                let dotted = format!("steps.{name}");
                let indexed = [format!("steps[\"{name}\"]"), format!("steps['{name}']")];
                texts.iter().any(|t| {
                    t.match_indices(&dotted).any(|(at, _)| {
                        !t[at + dotted.len()..]
                            .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    }) || indexed.iter().any(|i| t.contains(i.as_str()))
                })
            })
    }

    /// The step's verdict on its reply: `@ok`, `@retry`, then `@ok-if`.
    fn judge(
        &self,
        step: &Step,
        reply: &Reply,
        response: &Value,
        scope: &Value,
    ) -> Result<(), Failure> {
        let code = reply.status;
        match step.judge.verdict(code) {
            Verdict::Ok => {
                let Some(expr) = &step.ok_if else {
                    return Ok(());
                };
                match self.eval(expr, response, scope) {
                    Ok(v) if v.is_true() => Ok(()),
                    Ok(_) => Err(Failure::permanent(self.message(
                        step,
                        reply,
                        response,
                        scope,
                        &format!("{}: @ok-if {expr} is false", step.label()),
                    ))),
                    Err(e) => Err(Failure::permanent(self.mask(&format!(
                        "{} {}: @ok-if {expr}: {}",
                        self.file,
                        step.label(),
                        e.detail().unwrap_or("cannot be evaluated")
                    )))),
                }
            }
            verdict => {
                let text = self.message(step, reply, response, scope, "");
                let message = truncate_chars(
                    format!("{}: target answered HTTP {code}: {text}", step.label())
                        .trim_end_matches([' ', ':']),
                    MAX_MESSAGE,
                )
                .to_string();
                Err(Failure {
                    transient: verdict == Verdict::Transient,
                    retry_after: reply.retry_after,
                    ..Failure::transient(message)
                })
            }
        }
    }

    /// The status message for a step's reply: `@message`, else the reply body, else
    /// `fallback`; secrets masked, at most 4000 characters.
    fn message(
        &self,
        step: &Step,
        reply: &Reply,
        response: &Value,
        scope: &Value,
        fallback: &str,
    ) -> String {
        let text = match &step.message {
            Some(expr) => match self.eval(expr, response, scope) {
                Ok(v) if !v.is_undefined() && !v.is_none() => v.to_string(),
                Ok(_) => reply.body.trim().to_string(),
                Err(e) => format!(
                    "@message {expr}: {}",
                    e.detail().unwrap_or("cannot be evaluated")
                ),
            },
            None => reply.body.trim().to_string(),
        };
        let text = if text.is_empty() {
            fallback.to_string()
        } else {
            text
        };
        truncate_chars(&self.mask(&text), MAX_MESSAGE).to_string()
    }

    fn eval(&self, expr: &str, response: &Value, scope: &Value) -> Result<Value, minijinja::Error> {
        let compiled = self.env.compile_expression(expr)?;
        compiled.eval(scope::with_response(scope, response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::ConnectorSpec;
    use crate::event::Event;
    use crate::portabilling::{PbSecret, PbSettings};
    use crate::util::Secret;
    use std::time::Duration;

    fn connector(text: &str, debug: bool) -> TemplateConnector {
        let dir = std::env::temp_dir().join(format!(
            "espfd-template-unit-{}-{}",
            std::process::id(),
            crate::util::jitter_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.http");
        std::fs::write(&path, text).unwrap();
        let settings = ConnectorSettings {
            spec: ConnectorSpec::Template(path.clone()),
            timeout: Duration::from_secs(1),
            exec_timeout: Duration::from_secs(1),
            pool: 1,
            hidden_env: vec![],
            settings: [("URL".to_string(), "http://127.0.0.1:9".to_string())].into(),
            secrets: [("KEY".to_string(), Secret("s3cr3t".into()))].into(),
            auth: Default::default(),
            tls: Default::default(),
        };
        let pb = PbClient::new(&PbSettings {
            url: "http://127.0.0.1:9".into(),
            login: "x".into(),
            secret: PbSecret::Password("y".into()),
            ca_file: None,
            timeout: Duration::from_secs(1),
            pool: 1,
        })
        .unwrap();
        let t = TemplateConnector::load(&path, &settings, Arc::new(pb), debug).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        t
    }

    fn dry(t: &TemplateConnector) -> Run {
        let ev = Event::parse(
            br#"{"event_type":"Subscriber/Updated","variables":{"i_event":5,"i_account":7}}"#,
        )
        .unwrap();
        let record = serde_json::json!({"i_account": 7, "firstname": "A \"quoted\" <name>"});
        let context = Context::new(&ev, 0, 1, "HSS", Some(record));
        t.run(&context, Mode::DryRun)
    }

    #[test]
    fn undefined_values_are_named_without_debug_mode_too() {
        for debug in [false, true] {
            let t = connector(
                "### s\nGET {{ setting(\"URL\") }}/{{ account.nope }}\n",
                debug,
            );
            let note = dry(&t).steps[0].note.clone().unwrap();
            assert_eq!(
                note, "t.http line 2: undefined value: account.nope",
                "debug {debug}"
            );
        }
    }

    #[test]
    fn document_tojson_is_the_url_connectors_document() {
        let t = connector(
            "### s\nPOST {{ setting(\"URL\") }}/\n\n{{ document | tojson }}\n",
            false,
        );
        let ev = Event::parse(
            br#"{"event_type":"Subscriber/Updated","variables":{"i_event":5,"i_account":7}}"#,
        )
        .unwrap();
        let record = serde_json::json!({"i_account": 7, "firstname": "A", "n": [1, {"x": null}]});
        let context = Context::new(&ev, 1_000, 2, "HSS", Some(record));
        let run = t.run(&context, Mode::DryRun);
        let body = run.steps[0].request.clone().unwrap().body;
        let rendered: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let document: serde_json::Value = serde_json::from_str(&context.document).unwrap();
        assert_eq!(rendered, document);
        assert_eq!(rendered["entity"]["kind"], "account");
    }

    #[test]
    fn secrets_are_masked_and_names_are_in_scope() {
        let t = connector(
            "### s\nPOST {{ setting(\"URL\") }}/x?k={{ secret(\"KEY\") }}\nX-Group: {{ group }}\n\n{{ account.firstname | tojson }} {{ event.i_event }}\n",
            false,
        );
        let run = dry(&t);
        let req = run.steps[0].request.clone().unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/x?k=s3cr3t");
        assert_eq!(t.mask(&req.url), "http://127.0.0.1:9/x?k=***");
        assert_eq!(req.header("X-Group"), Some("HSS"));
        assert_eq!(req.header("Idempotency-Key"), Some("5"));
        // tojson is JSON (MiniJinja also escapes < and > for HTML's sake).
        let body = String::from_utf8(req.body).unwrap();
        let (json, rest) = body.rsplit_once(' ').unwrap();
        let value: String = serde_json::from_str(json).unwrap();
        assert_eq!((value.as_str(), rest), ("A \"quoted\" <name>", "5"));
    }
}
