//! Device nodes that load their module when opened, as `kmod static-nodes`
//! makes them on a full system: `/dev/loop-control` (loop), `/dev/fuse`,
//! `/dev/btrfs-control`, `/dev/mapper/control`. devtmpfs creates a node
//! only once its driver is loaded, and nothing loads these drivers for
//! hardware: without the node, `losetup` finds no loop device and ntfs-3g
//! no FUSE. Opening the node makes the kernel ask for `char-major-M-N`,
//! which the `modprobe` applet loads.
//!
//! The nodes come from `modules.alias`: a module with a `devname:NAME`
//! alias and a `char-major-M-N` (or `block-major-M-N`) alias gets
//! `/dev/NAME` with that number, as `depmod` pairs them for
//! `modules.devname`.

use std::collections::HashMap;

/// A node to make: path below /dev, block or character, major, minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    pub name: String,
    pub block: bool,
    pub major: u32,
    pub minor: u32,
}

/// The static nodes `modules.alias` text describes, sorted by name.
pub fn static_nodes(alias_text: &str) -> Vec<StaticNode> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut numbers: HashMap<&str, (bool, u32, u32)> = HashMap::new();
    for line in alias_text.lines() {
        let mut w = line.split_whitespace();
        let (Some("alias"), Some(alias), Some(module)) = (w.next(), w.next(), w.next()) else { continue };
        if let Some(n) = alias.strip_prefix("devname:") {
            names.insert(module, n);
        } else if let Some((block, rest)) = alias.strip_prefix("char-major-").map(|r| (false, r)).or_else(|| alias.strip_prefix("block-major-").map(|r| (true, r))) {
            // Only an exact number: `block-major-7-*` names no one node.
            if let Some((ma, mi)) = rest.split_once('-') {
                if let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) {
                    numbers.entry(module).or_insert((block, ma, mi));
                }
            }
        }
    }
    let mut out: Vec<StaticNode> = names
        .iter()
        .filter(|(_, n)| !n.is_empty() && !n.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
        .filter_map(|(m, n)| numbers.get(m).map(|&(block, major, minor)| StaticNode { name: (*n).to_string(), block, major, minor }))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_devnames_with_their_numbers() {
        let text = "alias devname:btrfs-control btrfs\nalias char-major-10-234 btrfs\nalias devname:loop-control loop\nalias char-major-10-237 loop\nalias block-major-7-* loop\nalias devname:mapper/control dm_mod\nalias char-major-10-236 dm_mod\nalias pci:v00008086d* e1000e\nalias devname:../etc/x evil\nalias char-major-1-1 evil\nalias devname:lonely lonely\nalias fs-ext4 ext4\n";
        let nodes = static_nodes(text);
        let names: Vec<(&str, u32, u32)> = nodes.iter().map(|n| (n.name.as_str(), n.major, n.minor)).collect();
        assert_eq!(names, [("btrfs-control", 10, 234), ("loop-control", 10, 237), ("mapper/control", 10, 236)]);
        assert!(nodes.iter().all(|n| !n.block));
        assert!(static_nodes("").is_empty());
    }
}
