//! Target paths in the REST layout: `Users`, `Things/Pump1`, `Things/Pump1/Services/Reset`.

use crate::names::{Category, Kind, Permission};
use thiserror::Error;

/// A parsed target path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPath {
    pub kind: Kind,
    pub entity: Option<String>,
    pub member: Option<(Category, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("{0:?} is not a collection; use one of {list}", list = collections())]
    UnknownCollection(String),
    #[error(
        "{path:?} is not a target path; write Collection, Collection/Entity or Collection/Entity/Properties|Services|Events/Name"
    )]
    Malformed { path: String },
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("{permission} applies to {expected}, but the path names {got}")]
    WrongCategory {
        permission: Permission,
        expected: &'static str,
        got: &'static str,
    },
    #[error("{permission} is a design-time permission of a whole entity; drop the /{got}/... part")]
    MemberOnDesignTime {
        permission: Permission,
        got: &'static str,
    },
}

fn collections() -> String {
    Kind::ALL
        .iter()
        .map(|k| k.collection())
        .collect::<Vec<_>>()
        .join(", ")
}

impl RequestPath {
    pub fn parse(path: &str) -> Result<RequestPath, PathError> {
        let trimmed = path.trim_matches('/');
        let trimmed = trimmed.strip_prefix("Thingworx/").unwrap_or(trimmed);
        let parts: Vec<&str> = trimmed.split('/').collect();
        let malformed = || PathError::Malformed {
            path: path.to_string(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(malformed());
        }
        let kind = Kind::from_collection(parts[0])
            .ok_or_else(|| PathError::UnknownCollection(parts[0].to_string()))?;
        match parts.as_slice() {
            [_] => Ok(RequestPath {
                kind,
                entity: None,
                member: None,
            }),
            [_, e] => Ok(RequestPath {
                kind,
                entity: Some(e.to_string()),
                member: None,
            }),
            [_, e, c, m] => Ok(RequestPath {
                kind,
                entity: Some(e.to_string()),
                member: Some((Category::parse(c).ok_or_else(malformed)?, m.to_string())),
            }),
            _ => Err(malformed()),
        }
    }

    /// Checks that `permission` fits what the path names.
    pub fn check_fits(&self, permission: Permission) -> Result<(), PathError> {
        match (&self.member, permission.category()) {
            (Some((c, _)), Some(expected)) if *c != expected => Err(PathError::WrongCategory {
                permission,
                expected: expected.name(),
                got: c.name(),
            }),
            (Some((c, _)), None) => Err(PathError::MemberOnDesignTime {
                permission,
                got: c.name(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        let p = RequestPath::parse("Things/Pump1/Services/Reset").unwrap();
        assert_eq!(p.kind, Kind::Thing);
        assert_eq!(p.entity.as_deref(), Some("Pump1"));
        assert_eq!(p.member, Some((Category::Services, "Reset".into())));
        assert_eq!(RequestPath::parse("/Thingworx/Users").unwrap().entity, None);
        assert!(matches!(
            RequestPath::parse("Widgets/x"),
            Err(PathError::UnknownCollection(_))
        ));
        assert!(matches!(
            RequestPath::parse("Things/a/b"),
            Err(PathError::Malformed { .. })
        ));
        assert!(matches!(
            RequestPath::parse("Things//x"),
            Err(PathError::Malformed { .. })
        ));
        let p = RequestPath::parse("Things/a/Properties/x").unwrap();
        assert!(p.check_fits(Permission::ServiceInvoke).is_err());
        assert!(p.check_fits(Permission::PropertyRead).is_ok());
        assert!(p.check_fits(Permission::Read).is_err());
    }
}
