//! OpenAPI schemas of the model's and the enforcer's small value types. They are written here, by
//! hand, from the types' own lists of values (`Domain::ALL`, `as_str`), so the document cannot drift
//! from what the API serialises, and the modules that own the types need not know about OpenAPI.

use utoipa::{
    openapi::{schema::Type, ObjectBuilder, RefOr, Schema},
    PartialSchema, ToSchema,
};

use crate::{
    enforce::{Domain, Mode, Modes},
    model::{EdgeKind, LossReason, NodeKind, WorkloadKind},
    store::VerdictKind,
};

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().map(str::to_owned)))
        .description(Some(description))
        .into()
}

macro_rules! string_enum_schema {
    ($ty:ty, $values:expr, $description:literal) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string_enum($values, $description)
            }
        }
        impl ToSchema for $ty {}
    };
}

string_enum_schema!(Domain, Domain::ALL.map(Domain::as_str), "An enforcement domain.");
string_enum_schema!(
    Mode,
    [Mode::Observe, Mode::Audit, Mode::Enforce].map(Mode::as_str),
    "observe: nothing evaluated; audit: would-deny reported; enforce: denied with EPERM."
);
string_enum_schema!(
    VerdictKind,
    [VerdictKind::Deny, VerdictKind::WouldDeny].map(VerdictKind::as_str),
    "deny (enforce) or would-deny (audit)."
);
const NODE_KINDS: [NodeKind; 5] =
    [NodeKind::Workload, NodeKind::Executable, NodeKind::File, NodeKind::Endpoint, NodeKind::Capability];
const EDGE_KINDS: [EdgeKind; 5] =
    [EdgeKind::Exec, EdgeKind::Open, EdgeKind::Connect, EdgeKind::Capable, EdgeKind::Ptrace];
const WORKLOAD_KINDS: [WorkloadKind; 4] =
    [WorkloadKind::Host, WorkloadKind::Launched, WorkloadKind::Systemd, WorkloadKind::Container];

string_enum_schema!(NodeKind, NODE_KINDS.map(NodeKind::as_str), "What a graph node stands for.");
string_enum_schema!(EdgeKind, EDGE_KINDS.map(EdgeKind::as_str), "What a graph edge records.");
string_enum_schema!(LossReason, LossReason::ALL.map(LossReason::as_str), "Why observations were lost.");
string_enum_schema!(
    WorkloadKind,
    WORKLOAD_KINDS.map(WorkloadKind::as_str),
    "How the workload was identified."
);

impl PartialSchema for Modes {
    fn schema() -> RefOr<Schema> {
        let mut b = ObjectBuilder::new().description(Some("The mode of each enforcement domain."));
        for d in Domain::ALL {
            b = b.property(d.as_str(), Mode::schema()).required(d.as_str());
        }
        b.into()
    }
}
impl ToSchema for Modes {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value a schema lists is one serde writes, and the other way round.
    #[test]
    fn enum_schemas_list_what_serde_writes() {
        fn values<T: PartialSchema>() -> Vec<String> {
            let RefOr::T(Schema::Object(o)) = T::schema() else { panic!("not an object schema") };
            o.enum_values.unwrap().into_iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        }
        let written = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        assert_eq!(values::<Domain>(), Domain::ALL.map(|d| written(serde_json::to_value(d).unwrap())));
        assert_eq!(
            values::<LossReason>(),
            LossReason::ALL.map(|d| written(serde_json::to_value(d).unwrap()))
        );
        assert_eq!(values::<NodeKind>(), NODE_KINDS.map(|d| written(serde_json::to_value(d).unwrap())));
        assert_eq!(values::<EdgeKind>(), EDGE_KINDS.map(|d| written(serde_json::to_value(d).unwrap())));
        // The lists above are complete: parse knows nothing else.
        assert!(NODE_KINDS.iter().all(|k| NodeKind::parse(k.as_str()) == Some(*k)));
        assert_eq!(values::<VerdictKind>(), ["deny", "would-deny"]);
        assert_eq!(values::<Mode>(), ["observe", "audit", "enforce"]);
    }
}
