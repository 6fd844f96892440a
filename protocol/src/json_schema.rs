//! JSON Schemas of the protobuf messages in their canonical JSON form (the proto3 JSON mapping
//! as `pbjson` writes and reads it, proto field names kept), generated from the compiled
//! descriptors: the REST API's OpenAPI document takes its request and response schemas from
//! here, so they cannot drift from what the server reads and writes.
//!
//! The mapping: strings, booleans and 32-bit integers as themselves; 64-bit integers as decimal
//! strings (integers are accepted on input too); `double`/`float` as numbers (a NaN is written as
//! null: a figure not known; input takes numbers only); enums by value name (numbers accepted on input); `bytes` as base64;
//! repeated fields as arrays; a oneof's members as optional fields of which at most one is set.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

/// The messages and enums of [`crate::FILE_DESCRIPTOR_SET`], by fully qualified name
/// (`presage.v1.StatusRequest`).
pub struct Schemas {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
}

/// A message a caller named is not among the descriptors.
#[derive(Debug, thiserror::Error)]
#[error("no protobuf message {0:?} in presage's descriptors")]
pub struct UnknownMessage(pub String);

impl Schemas {
    /// The compiled-in descriptors.
    pub fn compiled() -> Schemas {
        let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).expect("the build script wrote a valid descriptor set");
        let mut schemas = Schemas { messages: BTreeMap::new(), enums: BTreeMap::new() };
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for e in file.enum_type {
                schemas.enums.insert(format!("{package}.{}", e.name()), e);
            }
            for m in file.message_type {
                schemas.add_message(&package, m);
            }
        }
        schemas
    }

    fn add_message(&mut self, scope: &str, m: DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for e in &m.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        for nested in &m.nested_type {
            self.add_message(&name, nested.clone());
        }
        self.messages.insert(name, m);
    }

    /// Whether `full_name` (`presage.v1.X`) is a message.
    pub fn has_message(&self, full_name: &str) -> bool {
        self.messages.contains_key(full_name)
    }

    /// The name a message or enum's schema has in an OpenAPI document's `components.schemas`:
    /// its name within the package (`StatusRequest`, `CommandResult.Detail`).
    pub fn component_name(full_name: &str) -> String {
        full_name.strip_prefix("presage.v1.").or_else(|| full_name.strip_prefix("presage.guest.v1.")).unwrap_or(full_name).to_string()
    }

    /// The name of a message's schema as input (`strict`) or output.
    pub fn reference(full_name: &str, strict: bool) -> String {
        let name = Self::component_name(full_name);
        if strict { format!("{name}.Input") } else { name }
    }

    /// The schemas of `roots` and of every message and enum they reach, by component name;
    /// references between them are `#/components/schemas/NAME`. `strict` (request bodies,
    /// named `X.Input`): properties not in the message are refused, as the server refuses
    /// them, and numbers must be numbers; output may carry null where a figure is NaN.
    pub fn components(&self, roots: &[&str], strict: bool) -> Result<BTreeMap<String, Value>, UnknownMessage> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
        while let Some(name) = todo.pop() {
            let component = if self.enums.contains_key(&name) { Self::component_name(&name) } else { Self::reference(&name, strict) };
            if out.contains_key(&component) {
                continue;
            }
            if let Some(e) = self.enums.get(&name) {
                let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
                out.insert(component, json!({"type": "string", "enum": names}));
                continue;
            }
            let m = self.messages.get(&name).ok_or_else(|| UnknownMessage(name.clone()))?;
            let mut properties = serde_json::Map::new();
            for f in &m.field {
                let (schema, reaches) = self.field_schema(f, strict);
                if let Some(r) = reaches {
                    todo.push(r);
                }
                properties.insert(f.name().to_string(), schema);
            }
            let mut schema = json!({"type": "object", "properties": properties});
            if strict {
                schema["additionalProperties"] = false.into();
            }
            out.insert(component, schema);
        }
        Ok(out)
    }

    /// A field's schema and the message or enum it refers to (fully qualified), if any.
    fn field_schema(&self, f: &prost_types::FieldDescriptorProto, strict: bool) -> (Value, Option<String>) {
        let referred = f.type_name.as_deref().map(|t| t.trim_start_matches('.').to_string());
        let (item, reaches) = match f.r#type() {
            Type::String => (json!({"type": "string"}), None),
            Type::Bool => (json!({"type": "boolean"}), None),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => (json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}), None),
            Type::Uint32 | Type::Fixed32 => (json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}), None),
            // Up to 18 and 19 digits: every such number fits (the largest values need one more).
            Type::Int64 | Type::Sint64 | Type::Sfixed64 if strict => (
                json!({"anyOf": [{"type": "string", "pattern": "^-?[0-9]{1,18}$"}, {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}]}),
                None,
            ),
            Type::Uint64 | Type::Fixed64 if strict => (
                json!({"anyOf": [{"type": "string", "pattern": "^[0-9]{1,19}$"}, {"type": "integer", "minimum": 0, "maximum": u64::MAX}]}),
                None,
            ),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                (json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,18}$"}), None)
            }
            Type::Uint64 | Type::Fixed64 => (json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,19}$"}), None),
            Type::Double | Type::Float if strict => (json!({"type": "number"}), None),
            Type::Double | Type::Float => (json!({"type": ["number", "null"]}), None),
            Type::Bytes => (json!({"type": "string", "contentEncoding": "base64"}), None),
            Type::Enum => {
                let name = referred.clone().unwrap_or_default();
                (json!({"$ref": format!("#/components/schemas/{}", Self::component_name(&name))}), Some(name))
            }
            Type::Message | Type::Group => {
                let name = referred.clone().unwrap_or_default();
                // A map<K, V> is a repeated entry message: an object of V by key.
                if let Some(entry) = self.messages.get(&name).filter(|m| m.options.as_ref().is_some_and(|o| o.map_entry())) {
                    let value = entry.field.iter().find(|f| f.name() == "value").expect("a map entry has a value");
                    let (value, reaches) = self.field_schema(value, strict);
                    return (json!({"type": "object", "additionalProperties": value}), reaches);
                }
                (json!({"$ref": format!("#/components/schemas/{}", Self::reference(&name, strict))}), Some(name))
            }
        };
        if f.label() == Label::Repeated { (json!({"type": "array", "items": item}), reaches) } else { (item, reaches) }
    }

    /// How a query-string or path value becomes the JSON value `field` of `message` takes:
    /// booleans and numbers for fields of those types, strings for the rest (64-bit integers
    /// and enums are read from strings by the canonical mapping). `None`: no such field.
    pub fn typed_value(&self, message: &str, field: &str, raw: &str) -> Option<Value> {
        let m = self.messages.get(message)?;
        let f = m.field.iter().find(|f| f.name() == field || f.json_name() == field)?;
        let v = match f.r#type() {
            Type::Bool => match raw {
                "true" | "1" => Value::Bool(true),
                "false" | "0" | "" => Value::Bool(false),
                // Left as a string: the decoder names the field and what it expected.
                other => Value::String(other.into()),
            },
            Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 | Type::Double | Type::Float => {
                raw.parse::<serde_json::Number>().map(Value::Number).unwrap_or_else(|_| Value::String(raw.into()))
            }
            _ => Value::String(raw.into()),
        };
        Some(v)
    }

    /// The proto field names of `message` (for error messages).
    pub fn field_names(&self, message: &str) -> Vec<String> {
        self.messages.get(message).map(|m| m.field.iter().map(|f| f.name().to_string()).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_has_a_schema_and_references_resolve() {
        let s = Schemas::compiled();
        let roots: Vec<String> = s.messages.keys().cloned().collect();
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        let c = s.components(&roots, false).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        for r in text.split("#/components/schemas/").skip(1) {
            let name: String = r.chars().take_while(|c| *c != '"').collect();
            assert!(c.contains_key(&name), "{name} is referred to but has no schema");
        }
        assert!(s.components(&["presage.v1.NoSuchThing"], false).is_err());
    }

    #[test]
    fn schemas_follow_what_pbjson_writes() {
        // A response as the server writes it: u64 as a string, enum by name, NaN as a string.
        let s = Schemas::compiled();
        let c = s.components(&["presage.v1.StatusResponse"], false).unwrap();
        let status = &c["StatusResponse"]["properties"];
        let written = serde_json::to_value(crate::pb::StatusResponse { uptime_ms: 7, hosts_total: 2, ..Default::default() }).unwrap();
        assert_eq!(written["uptime_ms"], json!("7"));
        assert_eq!(status["uptime_ms"]["type"], "string");
        assert_eq!(written["hosts_total"], json!(2));
        assert_eq!(status["hosts_total"]["type"], "integer");
        for key in written.as_object().unwrap().keys() {
            assert!(status.get(key).is_some(), "{key} written but not in the schema");
        }
        let d = serde_json::to_value(crate::pb::VmForecast { cpu_p50: vec![f32::NAN], ..Default::default() }).unwrap();
        assert_eq!(d["cpu_p50"][0], Value::Null);
        let c = s.components(&["presage.v1.ListVmsResponse"], false).unwrap();
        assert_eq!(c["VmForecast"]["properties"]["cpu_p50"]["items"]["type"], json!(["number", "null"]));
        // Input: its own names, unknown properties refused.
        let c = s.components(&["presage.v1.PlaceRequest"], true).unwrap();
        assert_eq!(c["PlaceRequest.Input"]["additionalProperties"], json!(false));
    }

    #[test]
    fn query_values_take_the_field_type() {
        let s = Schemas::compiled();
        assert_eq!(s.typed_value("presage.v1.SetDrainRequest", "drain", "true"), Some(json!(true)));
        assert_eq!(s.typed_value("presage.v1.ListPlansRequest", "limit", "5"), Some(json!(5)));
        assert_eq!(s.typed_value("presage.v1.ListPlansRequest", "plan_id", "5"), Some(json!("5")));
        assert_eq!(s.typed_value("presage.v1.ListPlansRequest", "nope", "5"), None);
        let req: crate::pb::ListPlansRequest = serde_json::from_value(json!({"plan_id": "5", "limit": 3})).unwrap();
        assert_eq!((req.plan_id, req.limit), (5, 3));
        let refused = serde_json::from_value::<crate::pb::ListPlansRequest>(json!({"plan_idd": 1})).unwrap_err();
        assert!(refused.to_string().contains("plan_idd"), "{refused}");
    }
}
