//! What a capture thread consults per sample, published by the resolver: the remote
//! addresses an instance watches ([`WatchList`]), this host's addresses ([`LocalSet`]), and
//! the generation-stamped cell they are published in ([`Shared`]). Its own module so that the
//! interval code (report.rs) and the resolver (resolve.rs) both depend on it and not on each
//! other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::config::Cidr;
use super::netset::NetSet;

/// A value published to other threads with a generation number.
pub struct Shared<T> {
    generation: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Shared<T> {
    pub fn new(v: T) -> Shared<T> {
        Shared {
            generation: AtomicU64::new(1),
            value: Mutex::new(Arc::new(v)),
        }
    }
    /// The current generation (cheap: compare it per packet).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn get(&self) -> (u64, Arc<T>) {
        let v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation(), v.clone())
    }
    pub fn set(&self, v: T) {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *g = Arc::new(v);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The addresses of this host that count as local.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalSet(foldhash::HashSet<IpAddr>);

impl LocalSet {
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &IpAddr> {
        self.0.iter()
    }
}

impl From<HashSet<IpAddr>> for LocalSet {
    fn from(s: HashSet<IpAddr>) -> Self {
        LocalSet(s.into_iter().collect())
    }
}

/// The remote addresses an instance watches.
///
/// The configured blocks live in a [`NetSet`] behind an `Arc`: a lookup is one binary
/// search whatever the list's length, and the resolver's copy-on-change costs a pointer,
/// not the list.
#[derive(Clone, Debug, Default)]
pub struct WatchList {
    nets: Arc<NetSet>,
    /// Host name -> its current addresses (sorted).
    resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Address -> the host name it was resolved from (the first configured name wins).
    names: HashMap<IpAddr, Arc<str>>,
}

impl PartialEq for WatchList {
    fn eq(&self, o: &WatchList) -> bool {
        (Arc::ptr_eq(&self.nets, &o.nets) || self.nets == o.nets)
            && self.resolved == o.resolved
            && self.names == o.names
    }
}

impl Eq for WatchList {}

impl WatchList {
    pub fn new(nets: Vec<Cidr>) -> WatchList {
        WatchList {
            nets: Arc::new(NetSet::new(nets)),
            resolved: BTreeMap::new(),
            names: HashMap::new(),
        }
    }

    /// Record the addresses `host` resolves to now (replacing the previous ones).
    pub fn set_resolved(&mut self, host: &str, addrs: &[IpAddr]) {
        let mut v = addrs.to_vec();
        v.sort();
        v.dedup();
        self.resolved.insert(host.to_string(), v);
        self.rebuild_names();
    }

    fn rebuild_names(&mut self) {
        self.names.clear();
        for (h, addrs) in &self.resolved {
            let name: Arc<str> = Arc::from(h.as_str());
            for a in addrs {
                self.names.entry(*a).or_insert_with(|| name.clone());
            }
        }
    }

    pub fn resolved(&self, host: &str) -> Option<&[IpAddr]> {
        self.resolved.get(host).map(Vec::as_slice)
    }

    /// Whether `ip` is watched: a hash lookup and a binary search.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.names.contains_key(&ip) || self.nets.contains(ip)
    }

    /// The `dst` tag for a watched address: its configured host name, else the address.
    pub fn tag(&self, ip: IpAddr) -> Arc<str> {
        match self.name(ip) {
            Some(n) => n.clone(),
            None => Arc::from(ip.to_string().as_str()),
        }
    }

    /// The host name `ip` was resolved from, if one was.
    #[inline]
    pub fn name(&self, ip: IpAddr) -> Option<&Arc<str>> {
        if self.names.is_empty() {
            return None;
        }
        self.names.get(&ip)
    }

    /// Every watched address, configured and resolved, as one set (for the capture filter).
    pub fn set(&self) -> NetSet {
        let mut addrs: Vec<IpAddr> = self.names.keys().copied().collect();
        addrs.sort();
        self.nets.with(addrs.into_iter().map(Cidr::host))
    }

    /// Every watched block, configured and resolved, as the fewest CIDR blocks covering
    /// them (duplicates and overlaps merged), IPv4 first, in address order.
    pub fn blocks(&self) -> Vec<Cidr> {
        self.set().cidrs()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.names.is_empty()
    }
}
