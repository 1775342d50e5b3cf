//! The agent's one YAML library: saphyr. Rule files are read from its marked node tree by
//! hand (`rules::spec::file`, which reports every problem of a file at once); the config and
//! `steadfast test rules` files are decoded from the same tree with serde through the small
//! [`serde::Deserializer`] below, so an error names the key path, line and column
//! (`rules.max_series: invalid type: string "lots", expected usize at line 2 column 15`), as
//! serde_yaml did before, and `deny_unknown_fields` works as everywhere in serde.
//!
//! Why not the `serde-saphyr` crate: its current releases (2.x) parse with their own fork of
//! the parser (granit-parser), which would make two YAML parsers again, and its errors are
//! formatted as snippets rather than the one-line `path: message at line L column C` that
//! `check config` prints and the tests check. This file is the whole of the difference.
//!
//! Scalars are typed by what the target asks for, like serde_yaml: a string field takes any
//! scalar as written (`version: 1.10` is "1.10"), a number field reads the YAML 1.2 core
//! schema (saphyr's), a struct or map needs a mapping.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};
use serde::de::{
    self, value::MapAccessDeserializer, DeserializeOwned, DeserializeSeed, IntoDeserializer,
    Unexpected, Visitor,
};

/// A node of the tree, with its position.
pub type Node = MarkedYamlOwned;

/// A syntax or decoding error: the key path (empty at the root), serde's message and the
/// position (1-based line and column) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub path: String,
    pub message: String,
    pub at: Option<(usize, usize)>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.at {
            write!(f, " at line {line} column {column}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            path: String::new(),
            message: msg.to_string(),
            at: None,
        }
    }
}

/// One parsed YAML document (or none: an empty file, or only comments), and its text.
pub struct Document<'t> {
    text: &'t str,
    root: Option<Node>,
}

impl<'t> Document<'t> {
    /// Parses `text`, which must hold at most one document.
    pub fn parse(text: &'t str) -> Result<Self, Error> {
        let mut docs = Node::load_from_str(text).map_err(|e| Error {
            path: String::new(),
            message: e.info().to_string(),
            at: Some((e.marker().line(), e.marker().col() + 1)),
        })?;
        if docs.len() > 1 {
            let second = &docs[1];
            return Err(Error {
                path: String::new(),
                message: "more than one YAML document (`---`) is not supported".into(),
                at: Some(position(second)),
            });
        }
        Ok(Document {
            text,
            root: docs.pop(),
        })
    }

    /// Whether the text holds no document (it is empty, or only comments).
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// The node at `keys` (mapping keys from the root), if there is one.
    pub fn get(&self, keys: &[&str]) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for key in keys {
            let YamlDataOwned::Mapping(m) = &untagged(node).data else {
                return None;
            };
            node = m
                .iter()
                .find(|(k, _)| scalar_text(k, self.text).as_deref() == Some(*key))
                .map(|(_, v)| v)?;
        }
        Some(node)
    }

    /// Decodes the document (an empty one as an empty mapping: every field's default).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match &self.root {
            Some(root) => T::deserialize(De {
                node: root,
                text: self.text,
                path: String::new(),
            }),
            None => T::deserialize(de::value::MapDeserializer::<
                std::iter::Empty<(String, String)>,
                Error,
            >::new(std::iter::empty())),
        }
    }
}

/// Parses and decodes one document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    Document::parse(text)?.decode()
}

/// Writes `doc` as YAML in block style, multi-line strings as literal blocks (saphyr's
/// emitter, which quotes what would read back as something else).
pub fn emit(doc: &saphyr::Yaml<'_>) -> String {
    let mut out = String::new();
    let mut emitter = saphyr::YamlEmitter::new(&mut out);
    emitter.multiline(true);
    // Writing into a String fails only on a mapping key that is itself a collection, which
    // the callers never build.
    if let Err(e) = emitter.dump(doc) {
        return format!("# not written: {e}\n");
    }
    let mut out = out.strip_prefix("---\n").map(str::to_string).unwrap_or(out);
    out.push('\n');
    out
}

/// A string node.
pub fn string(s: &str) -> saphyr::Yaml<'static> {
    saphyr::Yaml::Value(saphyr::Scalar::String(s.to_string().into()))
}

/// A mapping node with string keys, in the order given.
pub fn mapping<'k>(
    entries: impl IntoIterator<Item = (&'k str, saphyr::Yaml<'static>)>,
) -> saphyr::Yaml<'static> {
    let mut m = saphyr::Mapping::new();
    for (k, v) in entries {
        m.insert(string(k), v);
    }
    saphyr::Yaml::Mapping(m)
}

/// Whether `node` is null (`~`, `null` or nothing).
pub fn is_null(node: &Node) -> bool {
    matches!(untagged(node).data, YamlDataOwned::Value(ScalarOwned::Null))
}

fn position(node: &Node) -> (usize, usize) {
    (node.span.start.line(), node.span.start.col() + 1)
}

/// A tagged node's content (`!!str x` is `x`).
fn untagged(mut node: &Node) -> &Node {
    while let YamlDataOwned::Tagged(_, inner) = &node.data {
        node = inner;
    }
    node
}

/// A scalar's text as written (a plain `1.10` stays "1.10"), or `None` for collections.
fn scalar_text(node: &Node, text: &str) -> Option<String> {
    let node = untagged(node);
    match &node.data {
        YamlDataOwned::Value(ScalarOwned::String(s)) => Some(s.clone()),
        YamlDataOwned::Representation(s, _, _) => Some(s.clone()),
        YamlDataOwned::Value(v) => {
            // Typed by saphyr: the source between the node's marks is what was written.
            let written = written(node, text);
            Some(if written.is_empty() {
                match v {
                    ScalarOwned::Integer(i) => i.to_string(),
                    ScalarOwned::FloatingPoint(f) => f.to_string(),
                    ScalarOwned::Boolean(b) => b.to_string(),
                    _ => String::new(),
                }
            } else {
                written.to_string()
            })
        }
        _ => None,
    }
}

/// The source text of a node, trimmed (empty for a key without a value).
fn written(node: &Node, text: &str) -> String {
    let (start, end) = (node.span.start.index(), node.span.end.index());
    let s: String = text
        .chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    s.trim().to_string()
}

/// The deserializer of one node; `path` is its key path for errors.
struct De<'a> {
    node: &'a Node,
    text: &'a str,
    path: String,
}

impl<'a> De<'a> {
    fn child(&self, node: &'a Node, step: fmt::Arguments<'_>) -> De<'a> {
        let path = if self.path.is_empty() {
            step.to_string().trim_start_matches('.').to_string()
        } else {
            format!("{}{step}", self.path)
        };
        De {
            node,
            text: self.text,
            path,
        }
    }

    /// Gives an error without a position this node's position and path.
    fn locate(&self, mut e: Error) -> Error {
        if e.at.is_none() {
            e.at = Some(position(self.node));
            e.path.clone_from(&self.path);
        }
        e
    }

    fn data(&self) -> &'a YamlDataOwned<Node> {
        &untagged(self.node).data
    }

    fn unexpected(&self) -> Unexpected<'a> {
        match self.data() {
            YamlDataOwned::Value(ScalarOwned::Null) => Unexpected::Unit,
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => Unexpected::Bool(*b),
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => Unexpected::Signed(*i),
            YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => Unexpected::Float(f.0),
            YamlDataOwned::Value(ScalarOwned::String(s)) => Unexpected::Str(s),
            YamlDataOwned::Representation(s, _, _) => Unexpected::Str(s),
            YamlDataOwned::Sequence(_) => Unexpected::Seq,
            YamlDataOwned::Mapping(_) => Unexpected::Map,
            _ => Unexpected::Other("an unresolved YAML node"),
        }
    }

    /// A plain decimal integer beyond i64 (saphyr reads those as floats), as written.
    fn unsigned(&self) -> Option<u128> {
        let YamlDataOwned::Value(ScalarOwned::Integer(_) | ScalarOwned::FloatingPoint(_)) =
            self.data()
        else {
            return None;
        };
        let text = scalar_text(self.node, self.text)?;
        let digits = text.strip_prefix('+').unwrap_or(&text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    fn invalid_type<V: Visitor<'a>>(&self, visitor: &V) -> Error {
        self.locate(de::Error::invalid_type(self.unexpected(), visitor))
    }

    /// A key written without a value (`log:`), which a struct, map or sequence reads as
    /// empty, as serde_yaml did (an explicit `~` or `null` is no collection).
    fn nothing(&self) -> bool {
        is_null(self.node) && written(self.node, self.text).is_empty()
    }

    fn visit_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.nothing() {
            let empty =
                de::value::MapDeserializer::<std::iter::Empty<(String, String)>, Error>::new(
                    std::iter::empty(),
                );
            return visitor.visit_map(empty).map_err(|e| self.locate(e));
        }
        let YamlDataOwned::Mapping(m) = self.data() else {
            return Err(self.invalid_type(&visitor));
        };
        let access = MapAcc {
            parent: &self,
            iter: m.iter(),
            value: None,
        };
        let out = visitor.visit_map(access);
        out.map_err(|e| self.locate(e))
    }
}

struct MapAcc<'p, 'a, I> {
    parent: &'p De<'a>,
    iter: I,
    value: Option<(&'a Node, String)>,
}

impl<'a, I: Iterator<Item = (&'a Node, &'a Node)>> de::MapAccess<'a> for MapAcc<'_, 'a, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        let key_text = scalar_text(k, self.parent.text).unwrap_or_default();
        let key = De {
            node: k,
            text: self.parent.text,
            path: self.parent.path.clone(),
        };
        // An unknown key is reported at the key, with the mapping's path.
        let out = seed.deserialize(De {
            node: k,
            text: self.parent.text,
            path: self.parent.path.clone(),
        });
        let out = out.map_err(|e| key.locate(e))?;
        self.value = Some((v, key_text));
        Ok(Some(out))
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (node, key) = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("a value was asked for before its key"))?;
        let child = self.parent.child(node, format_args!(".{key}"));
        seed.deserialize(child)
    }
}

struct SeqAcc<'p, 'a> {
    parent: &'p De<'a>,
    iter: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'a> de::SeqAccess<'a> for SeqAcc<'_, 'a> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.iter.next() else {
            return Ok(None);
        };
        seed.deserialize(self.parent.child(node, format_args!("[{i}]")))
            .map(Some)
    }
}

macro_rules! via_any {
    ($($name:ident)*) => {$(
        fn $name<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'a> de::Deserializer<'a> for De<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        let out = match self.data() {
            YamlDataOwned::Value(ScalarOwned::Null) => visitor.visit_unit(),
            YamlDataOwned::Value(ScalarOwned::Boolean(b)) => visitor.visit_bool(*b),
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => visitor.visit_i64(*i),
            YamlDataOwned::Value(ScalarOwned::FloatingPoint(f)) => visitor.visit_f64(f.0),
            YamlDataOwned::Value(ScalarOwned::String(s)) => visitor.visit_str(s),
            YamlDataOwned::Representation(s, _, _) => visitor.visit_str(s),
            YamlDataOwned::Sequence(s) => visitor.visit_seq(SeqAcc {
                parent: &self,
                iter: s.iter().enumerate(),
            }),
            YamlDataOwned::Mapping(_) => return self.visit_map(visitor),
            _ => return Err(self.invalid_type(&visitor)),
        };
        out.map_err(|e| self.locate(e))
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match scalar_text(self.node, self.text) {
            Some(s) => visitor.visit_str(&s).map_err(|e| self.locate(e)),
            None => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_u64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.unsigned().and_then(|n| u64::try_from(n).ok()) {
            Some(n) => visitor.visit_u64(n).map_err(|e| self.locate(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.unsigned() {
            Some(n) => visitor.visit_u128(n).map_err(|e| self.locate(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_i128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.unsigned().and_then(|n| i128::try_from(n).ok()) {
            Some(n) => visitor.visit_i128(n).map_err(|e| self.locate(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        // `o:`, `o: ~` and `o: null` are None.
        if is_null(self.node) {
            visitor.visit_none().map_err(|e| self.locate(e))
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        self.visit_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.visit_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.nothing() {
            let empty = de::value::SeqDeserializer::<std::iter::Empty<String>, Error>::new(
                std::iter::empty(),
            );
            return visitor.visit_seq(empty).map_err(|e| self.locate(e));
        }
        match self.data() {
            YamlDataOwned::Sequence(_) => self.deserialize_any(visitor),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let out = match self.data() {
            YamlDataOwned::Mapping(m) if m.len() == 1 => {
                visitor.visit_enum(MapAccessDeserializer::new(MapAcc {
                    parent: &self,
                    iter: m.iter(),
                    value: None,
                }))
            }
            YamlDataOwned::Sequence(_) | YamlDataOwned::Mapping(_) => {
                return Err(self.invalid_type(&visitor))
            }
            _ => match scalar_text(self.node, self.text) {
                Some(s) => visitor.visit_enum(s.as_str().into_deserializer()),
                None => return Err(self.invalid_type(&visitor)),
            },
        };
        out.map_err(|e| self.locate(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    via_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_unit
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Top {
        name: String,
        count: usize,
        big: u64,
        ratio: f64,
        on: bool,
        inner: Inner,
        list: Vec<Inner>,
        map: BTreeMap<String, u32>,
        kind: Kind,
        maybe: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        a: u8,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        #[default]
        First,
        SecondOne,
    }

    fn err(text: &str) -> String {
        from_str::<Top>(text).unwrap_err().to_string()
    }

    #[test]
    fn values_decode_by_the_type_asked_for() {
        let t: Top = from_str(
            "name: 1.10\ncount: 3\nbig: 18446744073709551615\nratio: 5\non: true\ninner: {a: 7}\nlist:\n  - a: 1\n  - {}\nmap: {x: 1, 'y': 2}\nkind: second_one\nmaybe: ~\n",
        )
        .unwrap();
        assert_eq!(t.name, "1.10", "a string field takes the scalar as written");
        assert_eq!((t.count, t.big, t.ratio, t.on), (3, u64::MAX, 5.0, true));
        assert_eq!(t.inner, Inner { a: 7 });
        assert_eq!(t.list, [Inner { a: 1 }, Inner { a: 0 }]);
        assert_eq!(t.map, BTreeMap::from([("x".into(), 1), ("y".into(), 2)]));
        assert_eq!((t.kind, t.maybe), (Kind::SecondOne, None));
        assert_eq!(from_str::<Top>("").unwrap(), Top::default());
        assert_eq!(
            from_str::<Top>("# only a comment\n").unwrap(),
            Top::default()
        );
    }

    /// What serde_yaml_ng 0.10 gave for the same documents (checked with it before it left).
    #[test]
    fn keys_without_values_read_as_serde_yaml_read_them() {
        #[derive(Debug, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        struct T {
            log: Inner,
            list: Vec<u8>,
            n: u64,
            s: String,
            o: Option<u8>,
        }
        let ok = |text: &str| from_str::<T>(text).unwrap();
        for text in [
            "", "---\n", "# c\n", "log:\n", "list:\n", "s:\n", "o:\n", "o: ~\n",
        ] {
            assert_eq!(ok(text), T::default(), "{text:?}");
        }
        assert_eq!(ok("s: ~\n").s, "~");
        assert_eq!(ok("s: true\n").s, "true");
        assert_eq!(ok("n: 0x10\n").n, 16);
        assert_eq!(ok("n: +5\n").n, 5);
        let err = |text: &str| from_str::<T>(text).unwrap_err().to_string();
        assert_eq!(
            err("log: ~\n"),
            "log: invalid type: unit value, expected struct Inner at line 1 column 6"
        );
        // A missing value is placed at its key's colon (serde_yaml_ng said column 3).
        assert_eq!(
            err("n:\n"),
            "n: invalid type: unit value, expected u64 at line 1 column 2"
        );
        assert_eq!(
            err("s: [1]\n"),
            "s: invalid type: sequence, expected a string at line 1 column 4"
        );
    }

    #[test]
    fn errors_name_the_key_path_line_and_column() {
        assert_eq!(
            err("count: lots\n"),
            "count: invalid type: string \"lots\", expected usize at line 1 column 8"
        );
        assert_eq!(
            err("inner:\n  a: 1\n  b: 2\n"),
            "inner: unknown field `b`, expected `a` at line 3 column 3"
        );
        assert_eq!(
            err("list:\n  - a: 1\n  - a: 300\n"),
            "list[1].a: invalid value: integer `300`, expected u8 at line 3 column 8"
        );
        assert_eq!(
            err("inner: [1]\n"),
            "inner: invalid type: sequence, expected struct Inner at line 1 column 8"
        );
        assert_eq!(
            err("kind: third\n"),
            "kind: unknown variant `third`, expected `first` or `second_one` at line 1 column 7"
        );
        assert_eq!(
            err("map: {x: -1}\n"),
            "map.x: invalid value: integer `-1`, expected u32 at line 1 column 10"
        );
        assert!(err("colour: red\n").starts_with("unknown field `colour`, expected one of"));
        assert!(err("colour: red\n").ends_with(" at line 1 column 1"));
        assert_eq!(
            err("a: 1\na: 2\n").split(" at line").count(),
            2,
            "duplicate keys"
        );
        assert_eq!(
            err("name: x\n---\nname: y\n"),
            "more than one YAML document (`---`) is not supported at line 3 column 1"
        );
        let syntax = err("log: [[[\n  {{ :\n");
        assert!(syntax.contains(" at line "), "{syntax}");
    }

    #[test]
    fn a_document_is_walked_by_keys() {
        let d = Document::parse("otlp:\n  endpoint: ~\n  attrs: {service.name: x}\n").unwrap();
        assert!(d.get(&["otlp", "endpoint"]).is_some_and(is_null));
        assert!(d.get(&["otlp", "attrs", "service.name"]).is_some());
        assert!(d.get(&["otlp", "nothing"]).is_none());
        assert!(Document::parse("").unwrap().get(&["otlp"]).is_none());
    }

    #[test]
    fn emitted_yaml_reads_back() {
        let doc = mapping([
            ("a", string("x: y # z")),
            ("b", string("two\nlines")),
            (
                "c",
                saphyr::Yaml::Sequence(vec![string("true"), string("5")]),
            ),
        ]);
        let out = emit(&doc);
        assert!(!out.starts_with("---"), "{out}");
        let back = Document::parse(&out).unwrap();
        let text = |k: &[&str]| scalar_text(back.get(k).unwrap(), &out).unwrap();
        assert_eq!(text(&["a"]), "x: y # z");
        assert_eq!(text(&["b"]), "two\nlines");
        #[derive(Deserialize)]
        struct C {
            c: Vec<String>,
        }
        let c: C = back.decode().unwrap();
        assert_eq!(c.c, ["true", "5"]);
        let YamlDataOwned::Sequence(s) = &back.get(&["c"]).unwrap().data else {
            panic!("{out}")
        };
        assert!(
            matches!(s[0].data, YamlDataOwned::Value(ScalarOwned::String(_))),
            "strings that read as other types are quoted: {out}"
        );
    }
}
