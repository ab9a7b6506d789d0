//! YAML to JSON values, remembering where each value stood in the file, so that a schema
//! error at `/app/volumes/2` can name its line and column.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A line and column in the file, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Position { line: m.line(), col: m.col() + 1 }
    }
}

/// A parsed document and the position of every value (by JSON pointer; a mapping entry's
/// position is its key's, where an editor would take the user).
#[derive(Debug)]
pub struct Located {
    pub value: Value,
    positions: HashMap<String, Position>,
}

impl Located {
    /// The position of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn position(&self, pointer: &str) -> Position {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Position { line: 1, col: 1 },
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {}, column {}: {message}", .position.line, .position.col)]
pub struct YamlError {
    pub position: Position,
    pub message: String,
}

enum Frame {
    Seq { pointer: String, items: Vec<Value>, anchor: usize },
    Map { pointer: String, entries: Map<String, Value>, key: Option<String>, anchor: usize },
}

struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    positions: HashMap<String, Position>,
    anchors: HashMap<usize, Value>,
    documents: usize,
    error: Option<YamlError>,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Plain scalars are typed the YAML 1.2 core-schema way; quoted ones are strings.
fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::Number(n.into());
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::Number(n.into());
    }
    let numeric = text.trim_start_matches(['-', '+']).chars().next().is_some_and(|c| c.is_ascii_digit() || c == '.');
    if numeric {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError { position: Position::from_marker(mark), message: message.into() });
        }
    }

    /// Where the next value goes, and record its position. `None` when it is a mapping key.
    fn child_pointer(&mut self, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => {
                // The document as a whole: its first line (the parser marks a block
                // mapping's start after its first key).
                self.positions.insert(String::new(), Position { line: mark.line(), col: 1 });
                Some(String::new())
            }
            Some(Frame::Seq { pointer, items, .. }) => {
                let p = format!("{pointer}/{}", items.len());
                self.positions.insert(p.clone(), Position::from_marker(mark));
                Some(p)
            }
            Some(Frame::Map { pointer, key, .. }) => key.as_ref().map(|k| format!("{pointer}/{}", escape(k))),
        }
    }

    fn push_value(&mut self, value: Value, mark: Marker) {
        match self.stack.last_mut() {
            None => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fail(mark, "a scenario file holds one YAML document");
                }
                self.root = Some(value);
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { pointer, entries, key, .. }) => match key.take() {
                Some(k) => {
                    entries.insert(k, value);
                }
                None => {
                    let Value::String(k) = value else {
                        let p = pointer.clone();
                        self.fail(mark, format!("mapping keys must be plain strings (in {})", if p.is_empty() { "/" } else { &p }));
                        return;
                    };
                    if entries.contains_key(&k) {
                        self.fail(mark, format!("duplicate key {k:?}"));
                        return;
                    }
                    let child = format!("{pointer}/{}", escape(&k));
                    self.positions.insert(child, Position::from_marker(mark));
                    *key = Some(k);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                let value = if is_key { Value::String(text) } else { scalar(text, style) };
                if !is_key {
                    self.child_pointer(mark);
                }
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, mark);
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor).cloned() {
                Some(value) => {
                    self.child_pointer(mark);
                    self.push_value(value, mark);
                }
                None => self.fail(mark, "alias to an unknown anchor"),
            },
            Event::SequenceStart(anchor, _) => match self.child_pointer(mark) {
                Some(pointer) => self.stack.push(Frame::Seq { pointer, items: Vec::new(), anchor }),
                None => self.fail(mark, "mapping keys must be plain strings, not sequences"),
            },
            Event::MappingStart(anchor, _) => match self.child_pointer(mark) {
                Some(pointer) => self.stack.push(Frame::Map { pointer, entries: Map::new(), key: None, anchor }),
                None => self.fail(mark, "mapping keys must be plain strings, not mappings"),
            },
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Map { entries, anchor, .. }) => (Value::Object(entries), anchor),
                    None => return,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, mark);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// Parse one YAML document.
pub fn parse(text: &str) -> Result<Located, YamlError> {
    let mut builder = Builder { stack: Vec::new(), root: None, positions: HashMap::new(), anchors: HashMap::new(), documents: 0, error: None };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        return Err(YamlError { position: Position::from_marker(*e.marker()), message: e.info().to_string() });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(Located { value: builder.root.unwrap_or(Value::Null), positions: builder.positions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_their_lines() {
        let doc = parse("name: x\napp:\n  volumes: [a, b]\n  freeze: 300\n  on: true\n  q: '12'\nlist:\n  - k: 1\n  - k: 2.5\n").unwrap();
        assert_eq!(doc.value["app"]["volumes"][1], "b");
        assert_eq!(doc.value["app"]["freeze"], 300);
        assert_eq!(doc.value["app"]["on"], true);
        assert_eq!(doc.value["app"]["q"], "12", "quoted scalars stay strings");
        assert_eq!(doc.value["list"][1]["k"], 2.5);
        assert_eq!(doc.position("/name").line, 1);
        assert_eq!(doc.position("/app/freeze"), Position { line: 4, col: 3 });
        assert_eq!(doc.position("/list/1/k").line, 9);
        assert_eq!(doc.position("/list/1/k/missing").line, 9, "falls back to the nearest ancestor");
    }

    #[test]
    fn syntax_errors_and_duplicates_name_the_line() {
        let e = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.position.line >= 2, "{e}");
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.position.line, 3, "{e}");
        assert!(e.message.contains("duplicate key \"a\""), "{e}");
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let doc = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(doc.value["other"]["x"], 1);
    }
}
