//! A template file's layout: its steps (split at `###` lines), each step's annotations
//! (`# @name`, `# @ok`, ...), and the `< file` bodies it names.
//!
//! Nothing here renders: the step's text is kept as written, to be rendered with MiniJinja
//! when an event comes (see `render.rs`).

use std::collections::{BTreeMap, BTreeSet};

use crate::connector::judge::{Judge, StatusList};

/// One request of a template file.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1 for the first step of the file.
    pub number: usize,
    /// The text after `###`, trimmed (may be empty).
    pub title: String,
    /// The file's line number of the step's first line of text (the line after `###`).
    pub line: usize,
    /// The step's text, from the line after `###` up to the next `###` line.
    pub text: String,
    /// `# @name`: the step's reply is `steps.NAME` for later steps.
    pub name: Option<String>,
    /// `# @ok` and `# @retry`.
    pub judge: Judge,
    /// `# @ok-if`: an expression over `response`.
    pub ok_if: Option<String>,
    /// `# @message`: an expression over `response`.
    pub message: Option<String>,
    /// `# @no-auth`: sent without the outbound authentication.
    pub no_auth: bool,
}

impl Step {
    /// How messages name the step: its `@name`, else its title, else its number.
    pub fn label(&self) -> String {
        match (&self.name, self.title.is_empty()) {
            (Some(name), _) => format!("step {name}"),
            (None, false) => format!("step '{}'", self.title),
            (None, true) => format!("step {}", self.number),
        }
    }
}

/// Whether a line of a step is a comment (`#` or `//`), and so never part of a request head.
pub fn is_comment(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with('#') || l.starts_with("//")
}

/// The file name of a `< file` body line, if `line` is one: `<`, blanks, one path.
pub fn body_file(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix('<')?;
    if !rest.starts_with([' ', '\t']) {
        return None; // `<soap:Envelope ...` is an inline XML body
    }
    let name = rest.trim();
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// Splits `source` into its steps. Text before the first `###` line is a step of its own
/// unless it holds only blank and comment lines (the file's header comment). Errors name
/// the line.
pub fn steps(source: &str) -> Result<Vec<Step>, String> {
    let mut raw: Vec<(String, usize, Vec<&str>)> = Vec::new();
    let mut lead: Vec<&str> = Vec::new();
    for (i, line) in source.lines().enumerate() {
        if let Some(title) = line.strip_prefix("###") {
            raw.push((title.trim().to_string(), i + 2, Vec::new()));
        } else if let Some((_, _, lines)) = raw.last_mut() {
            lines.push(line);
        } else {
            lead.push(line);
        }
    }
    if lead.iter().any(|l| !l.trim().is_empty() && !is_comment(l)) {
        raw.insert(0, (String::new(), 1, lead));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (n, (title, line, lines)) in raw.into_iter().enumerate() {
        let mut step = Step {
            number: n + 1,
            title,
            line,
            text: lines.join("\n") + "\n",
            name: None,
            judge: Judge::default(),
            ok_if: None,
            message: None,
            no_auth: false,
        };
        for (j, l) in lines.iter().enumerate() {
            let at = line + j;
            if let Some(ann) = annotation(l) {
                apply(&mut step, ann).map_err(|e| format!("line {at}: {e}"))?;
            }
        }
        if let Some(name) = &step.name {
            if !names.insert(name.clone()) {
                return Err(format!(
                    "line {line}: a second step is named {name}; names must differ"
                ));
            }
        }
        out.push(step);
    }
    Ok(out)
}

/// `@ok 200` from `# @ok 200` or `// @ok 200`.
fn annotation(line: &str) -> Option<&str> {
    let l = line.trim_start();
    let rest = l.strip_prefix('#').or_else(|| l.strip_prefix("//"))?;
    let rest = rest.trim_start();
    rest.starts_with('@').then_some(rest)
}

fn apply(step: &mut Step, ann: &str) -> Result<(), String> {
    let (key, value) = match ann.split_once(char::is_whitespace) {
        Some((k, v)) => (k, v.trim()),
        None => (ann.trim(), ""),
    };
    let needs_value = |what: &str| -> Result<String, String> {
        if value.is_empty() {
            Err(format!("{key} needs {what}"))
        } else {
            Ok(value.to_string())
        }
    };
    match key {
        "@name" => {
            let name = needs_value("a name")?;
            let ident = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident {
                return Err(format!(
                    "@name {name}: a name is letters, digits and _, not starting with a digit"
                ));
            }
            step.name = Some(name);
        }
        "@ok" => {
            step.judge.ok = StatusList::parse(&needs_value("a list of statuses")?)
                .map_err(|e| format!("@ok: {e}"))?
        }
        "@retry" => {
            step.judge.retry = StatusList::parse(&needs_value("a list of statuses")?)
                .map_err(|e| format!("@retry: {e}"))?
        }
        "@ok-if" => step.ok_if = Some(needs_value("an expression")?),
        "@message" => step.message = Some(needs_value("an expression")?),
        "@no-auth" if value.is_empty() => step.no_auth = true,
        "@no-auth" => return Err("@no-auth takes no value".into()),
        // REST Client and JetBrains annotations that change nothing here.
        "@prompt" | "@note" | "@no-redirect" | "@no-cookie-jar" | "@no-log" => {}
        other => {
            return Err(format!(
                "unknown annotation {other} (known: @name, @ok, @retry, @ok-if, @message, @no-auth)"
            ))
        }
    }
    Ok(())
}

/// The `< file` names in the steps' text, wherever they sit (an `{% if %}` may choose),
/// each with the file's line number where it is first named.
pub fn body_files(steps: &[Step]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for step in steps {
        for (j, line) in step.text.lines().enumerate() {
            if let Some(name) = body_file(line) {
                out.entry(name.to_string()).or_insert(step.line + j);
            }
        }
    }
    out
}

/// Refuses the tags that would read other templates: `include`, `import`, `from`,
/// `extends`, wherever the tag's name sits (a line break may follow `{%`). Returns the
/// 1-based line of the first one.
pub fn forbidden_tag(source: &str) -> Option<(usize, &'static str)> {
    let mut from = 0;
    while let Some(at) = source[from..].find("{%") {
        let start = from + at;
        let tag = source[start + 2..]
            .trim_start_matches(['-', '+', '~'])
            .trim_start();
        for word in ["include", "import", "from", "extends"] {
            if tag.starts_with(word)
                && !tag[word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                return Some((source[..start].matches('\n').count() + 1, word));
            }
        }
        from = start + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# ESPFD_SETTING_HSS_URL=http://hss
### look the subscriber up
# @name lookup
# @ok 200,404
GET {{ setting(\"HSS_URL\") }}/x
Accept: application/json

### create it
# @no-auth
// @retry 503
PUT http://x/

< body.json
";

    #[test]
    fn steps_annotations_and_lines() {
        let s = steps(FILE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].title, "look the subscriber up");
        assert_eq!(s[0].line, 3);
        assert_eq!(s[0].name.as_deref(), Some("lookup"));
        assert!(s[0].judge.ok.contains(404) && !s[0].judge.ok.contains(201));
        assert_eq!(s[0].label(), "step lookup");
        assert!(s[1].no_auth && s[1].judge.retry.contains(503) && !s[1].judge.retry.contains(500));
        assert_eq!(s[1].label(), "step 'create it'");
        assert_eq!(
            body_files(&s).into_iter().collect::<Vec<_>>(),
            [("body.json".to_string(), 13)]
        );
    }

    #[test]
    fn a_request_before_any_hashes_is_a_step() {
        let s = steps("GET http://x/\n\n### second\nGET http://y/\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].line, s[0].label()), (1, "step 1".to_string()));
        assert_eq!(s[1].line, 4);
    }

    #[test]
    fn bad_annotations_name_their_line() {
        let e = steps("### a\n# @ok 2000\nGET http://x/\n").unwrap_err();
        assert!(e.starts_with("line 2: @ok:"), "{e}");
        let e = steps("### a\n# @okay 200\n").unwrap_err();
        assert!(e.contains("line 2: unknown annotation @okay"), "{e}");
        let e = steps("### a\n# @name x\n### b\n# @name x\n").unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        let e = steps("### a\n# @name 1x\n").unwrap_err();
        assert!(e.contains("@name 1x"), "{e}");
    }

    #[test]
    fn body_file_lines_and_inline_xml() {
        assert_eq!(body_file("< pyhss.json"), Some("pyhss.json"));
        assert_eq!(body_file("  <\tbody.xml  "), Some("body.xml"));
        assert_eq!(body_file("<soap:Envelope>"), None);
        assert_eq!(body_file("< a b"), None);
    }

    #[test]
    fn includes_are_refused() {
        assert_eq!(forbidden_tag("a\n{%- include 'x' %}"), Some((2, "include")));
        assert_eq!(forbidden_tag("{% from 'x' import y %}"), Some((1, "from")));
        assert_eq!(forbidden_tag("{% if fromage %}{% endif %}"), None);
        assert_eq!(
            forbidden_tag("a\nb {%\n  include 'x' %}"),
            Some((2, "include"))
        );
        assert_eq!(forbidden_tag("{%-\r\nextends 'x' %}"), Some((1, "extends")));
        assert_eq!(forbidden_tag("{% set important = 1 %}"), None);
    }
}
