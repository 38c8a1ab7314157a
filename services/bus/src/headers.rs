//! [`Headers`]: message headers, the same on NATS and in process.

use crate::error::BusError;

/// Message headers: an ordered multimap of names to values. Names are matched exactly
/// (case-sensitive, as NATS does). W3C `traceparent` and the chunked-transfer headers of
/// `v4_protocol::chunk` travel here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Sets `name` to `value`, replacing earlier values.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value.into()));
    }

    /// Adds a value for `name`, keeping earlier ones.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Headers {
        self.insert(name, value);
        self
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Size on the NATS wire (`NATS/1.0\r\n` + `name: value\r\n`… + `\r\n`); 0 when empty.
    pub fn wire_len(&self) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        12 + self
            .0
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
    }

    /// Checks that NATS can carry every header: names of printable ASCII without `:`, values
    /// without CR/LF.
    pub fn validate(&self) -> Result<(), BusError> {
        for (n, v) in &self.0 {
            if n.is_empty() || n.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
                return Err(BusError::InvalidHeader {
                    name: n.clone(),
                    reason: "names must be printable ASCII without ':'",
                });
            }
            if v.contains(['\r', '\n']) {
                return Err(BusError::InvalidHeader {
                    name: n.clone(),
                    reason: "values cannot contain CR or LF",
                });
            }
        }
        Ok(())
    }

    pub(crate) fn to_nats(&self) -> Result<async_nats::HeaderMap, BusError> {
        self.validate()?;
        let mut map = async_nats::HeaderMap::new();
        for (n, v) in &self.0 {
            let name: async_nats::header::HeaderName =
                n.parse().map_err(|_| BusError::InvalidHeader {
                    name: n.clone(),
                    reason: "not a valid NATS header name",
                })?;
            let value: async_nats::HeaderValue =
                v.parse().map_err(|_| BusError::InvalidHeader {
                    name: n.clone(),
                    reason: "not a valid NATS header value",
                })?;
            map.append(name, value);
        }
        Ok(map)
    }

    pub(crate) fn from_nats(map: Option<&async_nats::HeaderMap>) -> Headers {
        let mut out = Headers::new();
        if let Some(map) = map {
            for (name, values) in map.iter() {
                let name: &str = name.as_ref();
                for v in values {
                    out.append(name, v.as_str());
                }
            }
        }
        out
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Headers {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps() {
        let mut h = Headers::new().with("a", "1");
        h.append("a", "2");
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        h.insert("a", "3");
        assert_eq!(h.get("a"), Some("3"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.wire_len(), "NATS/1.0\r\n".len() + "a: 3\r\n".len() + 2);
        assert_eq!(Headers::new().wire_len(), 0);
    }

    #[test]
    fn invalid_headers_are_errors_not_panics() {
        assert!(Headers::new().with("bad name", "v").to_nats().is_err());
        assert!(Headers::new().with("a:b", "v").to_nats().is_err());
        assert!(Headers::new().with("n", "v\r\nx: y").to_nats().is_err());
        let map = Headers::new()
            .with("traceparent", "00-ab-cd-01")
            .to_nats()
            .unwrap();
        assert_eq!(
            Headers::from_nats(Some(&map)).get("traceparent"),
            Some("00-ab-cd-01")
        );
    }
}
