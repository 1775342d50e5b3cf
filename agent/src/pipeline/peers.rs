//! `peer` label values (`address:port`), bounded: the first `max` peers seen get their own,
//! the rest share [`OTHER_PEER`].

use std::{collections::HashMap, net::SocketAddr};

/// `peer` label of peers beyond the bound.
pub const OTHER_PEER: &str = "other";

#[derive(Debug, Default)]
pub struct PeerLabels {
    labels: HashMap<SocketAddr, String>,
    max: usize,
}

impl PeerLabels {
    pub fn new(max: usize) -> Self {
        Self {
            labels: HashMap::new(),
            max,
        }
    }

    /// The label of `peer`: its own while fewer than `max` peers have one, else `other`.
    pub fn label(&mut self, peer: SocketAddr) -> String {
        if let Some(l) = self.labels.get(&peer) {
            return l.clone();
        }
        if self.labels.len() < self.max {
            let l = peer.to_string();
            self.labels.insert(peer, l.clone());
            return l;
        }
        OTHER_PEER.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_peers_keep_their_labels_the_rest_are_other() {
        let mut p = PeerLabels::new(2);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[::1]:8080".parse().unwrap();
        let c: SocketAddr = "10.0.0.3:80".parse().unwrap();
        assert_eq!(p.label(a), "10.0.0.1:80");
        assert_eq!(p.label(b), "[::1]:8080");
        assert_eq!(p.label(c), OTHER_PEER);
        assert_eq!(p.label(a), "10.0.0.1:80");
    }
}
