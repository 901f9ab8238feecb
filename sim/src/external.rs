//! Parsers for the external histories of `shared/linearizability` (its README gives
//! the formats): Jepsen etcd logs of one register, and Porcupine's kv histories as
//! EDN lines. Both become [`Operation`] lists through a [`Recorder`], which times
//! each event by its position.
//!
//! Event types follow Jepsen: `:invoke` opens an operation; `:ok` closes it;
//! `:info` means the client gave up, so the operation may take effect at any later
//! time; `:fail` means it did not take effect, except where the README says
//! otherwise (a failed cas returned false; a failed read timed out, result
//! unknown).

use crate::history::{Operation, RecordError, Recorder};
use crate::models::kv::{KvInput, KvOperation, KvOutput};
use crate::models::register::{RegisterInput, RegisterOutput};

/// A line of an external history that cannot be read; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("malformed {field}: {text:?}")]
    Malformed { field: &'static str, text: String },
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    #[error("field {0} given twice")]
    DuplicateField(String),
    #[error("{function:?} returns, but the process's outstanding operation is another")]
    FunctionMismatch { function: String },
    #[error(transparent)]
    Record(#[from] RecordError),
}

pub type RegisterHistory = Vec<Operation<RegisterInput, RegisterOutput>>;
pub type KvHistory = Vec<Operation<KvInput, KvOutput>>;

/// Marks the lines of a Jepsen log that record client events (the logger's
/// name, then `-`); all others are ignored.
const JEPSEN_EVENT_MARK: &str = "jepsen.util";

/// Parses a Jepsen etcd log: `P :type :f value` after `jepsen.util -` (other
/// lines are ignored), for a register read, written and cas'd by processes P.
/// Fields are separated by any run of whitespace, as Porcupine's parser
/// accepts (Jepsen writes tabs; copies of its logs often hold spaces).
pub fn parse_jepsen_register(text: &str) -> Result<RegisterHistory, ParseError> {
    let mut recorder = Recorder::new();
    for (index, line) in text.lines().enumerate() {
        let Some(event) = jepsen_event_text(line) else {
            continue;
        };
        let at_line = |kind| ParseError {
            line: index + 1,
            kind,
        };
        jepsen_event(&mut recorder, event).map_err(at_line)?;
    }
    Ok(recorder.finish())
}

/// The event after `jepsen.util`, whitespace, `-` and whitespace, if the line
/// records one.
fn jepsen_event_text(line: &str) -> Option<&str> {
    let (_, after) = line.split_once(JEPSEN_EVENT_MARK)?;
    let event = after.trim_start().strip_prefix('-')?;
    let separated = |text: &str| text.starts_with(char::is_whitespace);
    (separated(after) && separated(event)).then(|| event.trim_start())
}

/// Splits an event into its four fields; the value, last, keeps its inner
/// whitespace (a cas value is `[FROM TO]`).
fn jepsen_fields(event: &str) -> Result<[&str; 4], ParseErrorKind> {
    let mut rest = event.trim();
    let mut fields = [""; 4];
    for (found, field) in fields.iter_mut().enumerate() {
        if rest.is_empty() {
            return Err(ParseErrorKind::FieldCount { expected: 4, found });
        }
        let end = if found == 3 {
            rest.len()
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        *field = &rest[..end];
        rest = rest[end..].trim_start();
    }
    Ok(fields)
}

fn jepsen_event(
    recorder: &mut Recorder<RegisterInput, RegisterOutput>,
    event: &str,
) -> Result<(), ParseErrorKind> {
    let [process, kind, function, value] = jepsen_fields(event)?;
    let process = parse_field::<u64>("process", process)?;
    match kind {
        ":invoke" => recorder.invoke(process, register_input(function, value)?),
        ":info" => recorder.abandon(process)?,
        ":ok" | ":fail" => {
            let outstanding = recorder.outstanding_input(process).copied();
            let outstanding =
                outstanding.ok_or(RecordError::NothingOutstanding { client: process })?;
            let ok = kind == ":ok";
            match (function, outstanding) {
                (":read", RegisterInput::Read) if ok => {
                    let read = parse_optional_integer(value)?;
                    recorder.complete(process, Some(RegisterOutput::Read(read)))?;
                }
                (":read", RegisterInput::Read) => recorder.complete(process, None)?,
                (":write", RegisterInput::Write(_)) if ok => {
                    recorder.complete(process, Some(RegisterOutput::Written))?;
                }
                (":write", RegisterInput::Write(_)) => recorder.discard(process)?,
                (":cas", RegisterInput::Cas { .. }) => {
                    recorder.complete(process, Some(RegisterOutput::Cas { swapped: ok }))?;
                }
                (":read" | ":write" | ":cas", _) => {
                    return Err(ParseErrorKind::FunctionMismatch {
                        function: function.to_owned(),
                    })
                }
                _ => return Err(ParseErrorKind::UnknownFunction(function.to_owned())),
            }
        }
        _ => return Err(ParseErrorKind::UnknownType(kind.to_owned())),
    }
    Ok(())
}

fn register_input(function: &str, value: &str) -> Result<RegisterInput, ParseErrorKind> {
    match function {
        ":read" => Ok(RegisterInput::Read),
        ":write" => Ok(RegisterInput::Write(parse_field("value", value)?)),
        ":cas" => {
            let malformed = || ParseErrorKind::Malformed {
                field: "cas value",
                text: value.to_owned(),
            };
            let pair = value
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'));
            let mut numbers = pair.map(str::split_whitespace).ok_or_else(malformed)?;
            let (Some(from), Some(to), None) = (numbers.next(), numbers.next(), numbers.next())
            else {
                return Err(malformed());
            };
            Ok(RegisterInput::Cas {
                from: parse_field("cas from", from)?,
                to: parse_field("cas to", to)?,
            })
        }
        _ => Err(ParseErrorKind::UnknownFunction(function.to_owned())),
    }
}

fn parse_optional_integer(value: &str) -> Result<Option<i64>, ParseErrorKind> {
    if value == "nil" {
        return Ok(None);
    }
    parse_field("value", value).map(Some)
}

fn parse_field<T: std::str::FromStr>(field: &'static str, text: &str) -> Result<T, ParseErrorKind> {
    text.parse().map_err(|_| ParseErrorKind::Malformed {
        field,
        text: text.to_owned(),
    })
}

/// Parses Porcupine's kv history: one EDN map per line with `:process`, `:type`,
/// `:f` (get, put, append), `:key` and `:value` (a string, or nil for a get's
/// invocation).
pub fn parse_kv(text: &str) -> Result<KvHistory, ParseError> {
    let mut recorder = Recorder::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at_line = |kind| ParseError {
            line: index + 1,
            kind,
        };
        kv_event(&mut recorder, line).map_err(at_line)?;
    }
    Ok(recorder.finish())
}

fn kv_event(recorder: &mut Recorder<KvInput, KvOutput>, line: &str) -> Result<(), ParseErrorKind> {
    let fields = edn_map(line)?;
    let field = |name: &'static str| {
        fields
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value)
            .ok_or(ParseErrorKind::MissingField(name))
    };
    let process = parse_field::<u64>("process", field("process")?.symbol("process")?)?;
    let function = field("f")?.symbol("f")?;
    let kind = field("type")?.symbol("type")?;
    match kind {
        ":invoke" => {
            let key = field("key")?.string("key")?.to_owned();
            let operation = match function {
                ":get" => KvOperation::Get,
                ":put" => KvOperation::Put(field("value")?.string("value")?.to_owned()),
                ":append" => KvOperation::Append(field("value")?.string("value")?.to_owned()),
                _ => return Err(ParseErrorKind::UnknownFunction(function.to_owned())),
            };
            recorder.invoke(process, KvInput { key, operation });
        }
        ":ok" => {
            let outstanding = recorder.outstanding_input(process);
            let outstanding =
                outstanding.ok_or(RecordError::NothingOutstanding { client: process })?;
            let output = match (function, &outstanding.operation) {
                (":get", KvOperation::Get) => {
                    KvOutput::Value(field("value")?.string("value")?.to_owned())
                }
                (":put", KvOperation::Put(_)) | (":append", KvOperation::Append(_)) => {
                    KvOutput::Done
                }
                (":get" | ":put" | ":append", _) => {
                    return Err(ParseErrorKind::FunctionMismatch {
                        function: function.to_owned(),
                    })
                }
                _ => return Err(ParseErrorKind::UnknownFunction(function.to_owned())),
            };
            recorder.complete(process, Some(output))?;
        }
        ":info" => recorder.abandon(process)?,
        ":fail" => recorder.discard(process)?,
        _ => return Err(ParseErrorKind::UnknownType(kind.to_owned())),
    }
    Ok(())
}

/// A value of the flat EDN maps of the kv histories.
#[derive(Debug, PartialEq, Eq)]
enum EdnValue<'a> {
    String(String),
    /// A keyword, number or nil, as written.
    Symbol(&'a str),
}

impl<'a> EdnValue<'a> {
    fn symbol(&self, field: &'static str) -> Result<&'a str, ParseErrorKind> {
        match self {
            EdnValue::Symbol(symbol) => Ok(symbol),
            EdnValue::String(text) => Err(ParseErrorKind::Malformed {
                field,
                text: format!("{text:?}"),
            }),
        }
    }

    fn string(&self, field: &'static str) -> Result<&str, ParseErrorKind> {
        match self {
            EdnValue::String(text) => Ok(text),
            EdnValue::Symbol(symbol) => Err(ParseErrorKind::Malformed {
                field,
                text: (*symbol).to_owned(),
            }),
        }
    }
}

/// Reads `{:name value, ...}` with string, keyword, number or nil values.
fn edn_map(line: &str) -> Result<Vec<(&str, EdnValue<'_>)>, ParseErrorKind> {
    let malformed = || ParseErrorKind::Malformed {
        field: "map",
        text: line.to_owned(),
    };
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'));
    let mut rest = body.ok_or_else(malformed)?;
    let mut fields: Vec<(&str, EdnValue<'_>)> = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.is_empty() {
            return Ok(fields);
        }
        let entry = rest.strip_prefix(':').ok_or_else(malformed)?;
        let (name, after_name) = entry.split_once(' ').ok_or_else(malformed)?;
        let (value, after_value) = edn_value(after_name.trim_start()).ok_or_else(malformed)?;
        if fields.iter().any(|(field, _)| *field == name) {
            return Err(ParseErrorKind::DuplicateField(name.to_owned()));
        }
        fields.push((name, value));
        rest = after_value;
    }
}

/// Reads one value from the start of `text`, returning it and what follows.
fn edn_value(text: &str) -> Option<(EdnValue<'_>, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find([',', ' ']).unwrap_or(text.len());
        return (end > 0).then(|| (EdnValue::Symbol(&text[..end]), &text[end..]));
    };
    let mut string = String::new();
    let mut characters = quoted.char_indices();
    while let Some((position, character)) = characters.next() {
        match character {
            '"' => return Some((EdnValue::String(string), &quoted[position + 1..])),
            '\\' => match characters.next()?.1 {
                'n' => string.push('\n'),
                't' => string.push('\t'),
                escaped => string.push(escaped),
            },
            _ => string.push(character),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jepsen_lines_become_operations() {
        let log = "\
noise that is not an event
INFO  jepsen.util - 0\t:invoke\t:write\t3
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - 2\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:write\t3
INFO  jepsen.util - 1\t:fail\t:cas\t[3 4]
INFO  jepsen.util - 2\t:fail\t:read\t:timed-out
INFO  jepsen.util - 3\t:invoke\t:write\t5
INFO  jepsen.util - 3\t:info\t:write\t:timed-out
INFO  jepsen.util - 4\t:invoke\t:read\tnil
INFO  jepsen.util - 4\t:ok\t:read\t3
";
        let history = parse_jepsen_register(log).unwrap();
        assert_eq!(
            history,
            vec![
                Operation::completed(0, RegisterInput::Write(3), 0, RegisterOutput::Written, 3),
                Operation::completed(
                    1,
                    RegisterInput::Cas { from: 3, to: 4 },
                    1,
                    RegisterOutput::Cas { swapped: false },
                    4
                ),
                Operation {
                    client: 2,
                    input: RegisterInput::Read,
                    invoke_time: 2,
                    output: None,
                    return_time: 5
                },
                Operation::abandoned(3, RegisterInput::Write(5), 6),
                Operation::completed(4, RegisterInput::Read, 7, RegisterOutput::Read(Some(3)), 8),
            ]
        );
    }

    /// Porcupine splits Jepsen events on any whitespace; a log whose tabs became
    /// spaces (as copies of logs often do) was refused with "expected 4 fields,
    /// found 1" before this parser did the same.
    #[test]
    fn jepsen_fields_may_be_separated_by_any_whitespace() {
        let tabs = "\
INFO  jepsen.util - 0\t:invoke\t:write\t3
INFO  jepsen.util - 1\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - 0\t:ok\t:write\t3
INFO  jepsen.util - 1\t:ok\t:cas\t[3 4]
";
        let spaces = "\
INFO jepsen.util -  0 :invoke :write 3
INFO  jepsen.util  -\t1    :invoke :cas [3  4]
INFO jepsen.util - 0 :ok  :write   3  
INFO jepsen.util - 1 :ok :cas [3\t4]
";
        let expected = parse_jepsen_register(tabs).unwrap();
        assert_eq!(expected.len(), 2);
        assert_eq!(parse_jepsen_register(spaces).unwrap(), expected);
        // A mark without its separators is not an event line, as in Porcupine.
        assert_eq!(
            parse_jepsen_register("INFO jepsen.util-0 :invoke :read nil\n").unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn malformed_jepsen_lines_name_their_line() {
        let cases = [
            (
                "INFO  jepsen.util - 0\t:invoke\t:write",
                ParseErrorKind::FieldCount {
                    expected: 4,
                    found: 3,
                },
            ),
            (
                "INFO  jepsen.util - x\t:invoke\t:read\tnil",
                ParseErrorKind::Malformed {
                    field: "process",
                    text: "x".to_owned(),
                },
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:cas\t[1]",
                ParseErrorKind::Malformed {
                    field: "cas value",
                    text: "[1]".to_owned(),
                },
            ),
            (
                "INFO  jepsen.util - 0\t:invoke\t:swap\t1",
                ParseErrorKind::UnknownFunction(":swap".to_owned()),
            ),
            (
                "INFO  jepsen.util - 0\t:begin\t:read\tnil",
                ParseErrorKind::UnknownType(":begin".to_owned()),
            ),
            (
                "INFO  jepsen.util - 0\t:ok\t:read\t1",
                ParseErrorKind::Record(RecordError::NothingOutstanding { client: 0 }),
            ),
        ];
        for (line, kind) in cases {
            let log = format!("header\n{line}\n");
            assert_eq!(
                parse_jepsen_register(&log),
                Err(ParseError { line: 2, kind }),
                "{line}"
            );
        }
        let mismatched =
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:write\t1";
        assert_eq!(
            parse_jepsen_register(mismatched),
            Err(ParseError {
                line: 2,
                kind: ParseErrorKind::FunctionMismatch {
                    function: ":write".to_owned()
                }
            })
        );
    }

    #[test]
    fn kv_lines_become_operations() {
        let text = r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
{:process 3, :type :invoke, :f :get, :key "4", :value nil}
{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}
{:process 3, :type :ok, :f :get, :key "4", :value "say \"hi\", then"}
{:process 5, :type :invoke, :f :put, :key "4", :value "z"}
"#;
        let append = KvInput {
            key: "0".to_owned(),
            operation: KvOperation::Append("x 0 0 y".to_owned()),
        };
        let get = KvInput {
            key: "4".to_owned(),
            operation: KvOperation::Get,
        };
        let put = KvInput {
            key: "4".to_owned(),
            operation: KvOperation::Put("z".to_owned()),
        };
        assert_eq!(
            parse_kv(text).unwrap(),
            vec![
                Operation::completed(0, append, 0, KvOutput::Done, 2),
                Operation::completed(3, get, 1, KvOutput::Value("say \"hi\", then".to_owned()), 3),
                Operation::abandoned(5, put, 4),
            ]
        );
    }

    #[test]
    fn malformed_kv_lines_name_their_line() {
        let cases = [
            (
                r#":process 0, :type :invoke"#,
                ParseErrorKind::Malformed {
                    field: "map",
                    text: r#":process 0, :type :invoke"#.to_owned(),
                },
            ),
            (
                r#"{:process 0, :type :invoke, :key "0"}"#,
                ParseErrorKind::MissingField("f"),
            ),
            (
                r#"{:process 0, :type :invoke, :f :get, :key "0}"#,
                ParseErrorKind::Malformed {
                    field: "map",
                    text: r#"{:process 0, :type :invoke, :f :get, :key "0}"#.to_owned(),
                },
            ),
            (
                r#"{:process 0, :type :invoke, :f :put, :key "0", :value nil}"#,
                ParseErrorKind::Malformed {
                    field: "value",
                    text: "nil".to_owned(),
                },
            ),
            (
                r#"{:process 0, :process 1}"#,
                ParseErrorKind::DuplicateField("process".to_owned()),
            ),
            (
                r#"{:process 0, :type :ok, :f :get, :key "0", :value ""}"#,
                ParseErrorKind::Record(RecordError::NothingOutstanding { client: 0 }),
            ),
        ];
        for (line, kind) in cases {
            let text = format!("\n{line}\n");
            assert_eq!(parse_kv(&text), Err(ParseError { line: 2, kind }), "{line}");
        }
    }
}
