//! The `ipvsadm -ln`-like table `alive-proxy stats` prints, rendered from snapshots.
