//! A call's parameters: what every adapter hands to [`crate::api::invoke`].
//!
//! A short list of names and values in the order given, not a hash map: a service has a few
//! parameters, and a map hashed each name three times per call (to insert it, to check it, to
//! take it out) and allocated twice (issue 19: a tenth of a short service call). Names are
//! unique: [`Params::from_pairs`] keeps, for a name given twice, the last value at the first
//! place, as a JSON object read into a map does.

use serde_json::{Map, Value as Json};
use std::borrow::Cow;

/// The names and values of one call's parameters, each name once. Names are borrowed from the
/// request's body where it has them as they are (no escapes). (Kept in a `Vec`: inline room
/// for four, in a `SmallVec`, cost more in copies of the 400 bytes as the list moves from the
/// parser to the service than the one allocation it saves.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params<'a>(Pairs<'a>);

/// Names and values as given.
pub type Pairs<'a> = Vec<(Cow<'a, str>, Json)>;

/// Up to this many names, duplicates are found by comparing each with the ones before it;
/// beyond, by sorting the places by name (a body of many thousands of names stays n log n).
const LINEAR: usize = 16;

impl<'a> Params<'a> {
    /// No parameters.
    pub fn new() -> Params<'a> {
        Params(Vec::new())
    }

    /// From names and values as given (a JSON object's members in its text's order): for a
    /// name given twice, the last value, at the place of the first. In place: beyond the list,
    /// at most 25 bytes per name (a body's memory budget counts every member at 300 or more).
    pub fn from_pairs(mut pairs: Pairs<'a>) -> Params<'a> {
        if pairs.len() <= LINEAR {
            let duplicated = pairs
                .iter()
                .enumerate()
                .any(|(i, (n, _))| pairs[..i].iter().any(|(m, _)| m == n));
            if !duplicated {
                return Params(pairs);
            }
        }
        // The places in order of name, then of place: in each run of one name, the first place
        // keeps the name and takes the last value.
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by(|&a, &b| pairs[a].0.cmp(&pairs[b].0).then(a.cmp(&b)));
        let runs: Vec<(usize, usize)> = order
            .chunk_by(|&a, &b| pairs[a].0 == pairs[b].0)
            .map(|run| (run[0], run[run.len() - 1]))
            .collect();
        drop(order);
        let mut keep = vec![false; pairs.len()];
        for (first, last) in runs {
            keep[first] = true;
            if last != first {
                pairs[first].1 = std::mem::take(&mut pairs[last].1);
            }
        }
        let mut at = 0;
        pairs.retain(|_| {
            at += 1;
            keep[at - 1]
        });
        Params(pairs)
    }

    /// How many parameters were given.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Were none given?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value given for `name`.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value given for `name`, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Json> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Takes the value given for `name` out (the others keep their order).
    pub fn remove(&mut self, name: &str) -> Option<Json> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// Sets `name` to `value`; the value it had, if any.
    pub fn insert(&mut self, name: impl Into<Cow<'a, str>>, value: Json) -> Option<Json> {
        let name = name.into();
        match self.get_mut(&name) {
            Some(v) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    /// The names given, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_ref())
    }

    /// The names and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// As a JSON object (what host services read).
    pub fn into_map(self) -> Map<String, Json> {
        self.0
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v))
            .collect()
    }
}

impl From<Map<String, Json>> for Params<'static> {
    fn from(map: Map<String, Json>) -> Params<'static> {
        // A map's names are unique already.
        Params(map.into_iter().map(|(n, v)| (Cow::Owned(n), v)).collect())
    }
}

impl<'a, const N: usize> From<[(&'a str, Json); N]> for Params<'a> {
    fn from(pairs: [(&'a str, Json); N]) -> Params<'a> {
        Params::from_pairs(
            pairs
                .into_iter()
                .map(|(n, v)| (Cow::Borrowed(n), v))
                .collect(),
        )
    }
}

/// What [`crate::api::check_params`] reads and normalizes: the host's rows keep their JSON
/// object, a service defined in the model takes [`Params`].
pub trait ParamValues {
    /// The names given, in order.
    fn given(&self) -> impl Iterator<Item = &str>;
    /// The value given for `name`, to change in place.
    fn value_mut(&mut self, name: &str) -> Option<&mut Json>;
}

impl ParamValues for Params<'_> {
    fn given(&self) -> impl Iterator<Item = &str> {
        self.names()
    }
    fn value_mut(&mut self, name: &str) -> Option<&mut Json> {
        self.get_mut(name)
    }
}

impl ParamValues for Map<String, Json> {
    fn given(&self) -> impl Iterator<Item = &str> {
        self.keys().map(String::as_str)
    }
    fn value_mut(&mut self, name: &str) -> Option<&mut Json> {
        self.get_mut(name)
    }
}

#[cfg(test)]
mod tests {
    use super::Params;
    use serde_json::{Value as Json, json};

    fn pairs<'a>(names: &[&'a str]) -> super::Pairs<'a> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (std::borrow::Cow::Borrowed(*n), json!(i)))
            .collect()
    }

    #[test]
    fn a_name_given_twice_keeps_its_last_value_at_its_first_place_as_a_map_does() {
        for names in [
            vec!["a", "b", "a"],
            // Beyond the linear check: the sorting way.
            (0..40)
                .map(|i| ["x", "y", "z", "w"][i % 4])
                .collect::<Vec<_>>(),
        ] {
            let given = pairs(&names);
            let params = Params::from_pairs(given.clone());
            let map: serde_json::Map<String, Json> = given
                .into_iter()
                .map(|(n, v)| (n.into_owned(), v))
                .collect();
            assert_eq!(params.clone().into_map(), map);
            // Each name at its first place.
            let mut firsts: Vec<&str> = Vec::new();
            for n in &names {
                if !firsts.contains(n) {
                    firsts.push(n);
                }
            }
            assert_eq!(params.names().collect::<Vec<_>>(), firsts);
        }
    }

    #[test]
    fn many_distinct_names_are_kept_in_order() {
        let names: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let params = Params::from_pairs(pairs(&refs));
        assert_eq!(params.len(), 1000);
        assert_eq!(params.names().collect::<Vec<_>>(), refs);
        assert_eq!(params.get("p999"), Some(&json!(999)));
    }

    #[test]
    fn insert_replaces_and_remove_takes_out() {
        let mut p = Params::from([("a", json!(1)), ("b", json!(2))]);
        assert_eq!(p.insert("a", json!(3)), Some(json!(1)));
        assert_eq!(p.insert("c".to_string(), json!(4)), None);
        assert_eq!(p.remove("b"), Some(json!(2)));
        assert_eq!(p.remove("b"), None);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            vec![("a", &json!(3)), ("c", &json!(4))]
        );
    }
}
