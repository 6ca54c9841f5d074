//! `[config] network`: a word (`"dhcp"`, `"none"`) or a table
//! (`{ dhcp = true }`). Deserialized by hand so that a wrong value gets a
//! serde error naming what is accepted (an untagged enum would only say
//! "data did not match any variant").

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// How the image's network is configured.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum Network {
    /// `network = "dhcp"` or `network = "none"`.
    Mode(NetworkMode),
    /// `network = { dhcp = true }`.
    Table(NetworkTable),
}

/// A network mode by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// DHCP (v4 and v6) on every Ethernet link, with systemd-networkd.
    Dhcp,
    /// No network configuration is written.
    None,
}

/// The table form of `network`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkTable {
    /// DHCP on every Ethernet link (default true).
    pub dhcp: Option<bool>,
}

impl Network {
    /// True when DHCP is to be configured.
    pub fn dhcp(&self) -> bool {
        match self {
            Network::Mode(m) => *m == NetworkMode::Dhcp,
            Network::Table(t) => t.dhcp.unwrap_or(true),
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NetworkVisitor)
    }
}

struct NetworkVisitor;

impl<'de> Visitor<'de> for NetworkVisitor {
    type Value = Network;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#""dhcp", "none" or a table like { dhcp = true }"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Network, E> {
        let de: de::value::StrDeserializer<E> = v.into_deserializer();
        NetworkMode::deserialize(de).map(Network::Mode)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Network, A::Error> {
        NetworkTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(Network::Table)
    }
}
