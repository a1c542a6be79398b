//! Batched reads and writes over a [`Device`].
//!
//! [`Rx::recv`] fills a caller-owned slab with as many complete IP packets as
//! are ready; [`Tx::send`] writes a list of packets. Both reuse their buffers:
//! nothing is allocated per packet.
//!
//! Error policy: an error after some packets were moved ends the batch early
//! with what was done (the error repeats on the next call); an error before
//! any is returned.
use std::io;

use crate::{Device, Error, Result};

/// The largest frame one read returns.
pub const MAX_PACKET: usize = crate::device::MAX_PACKET;

/// Receive-side counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxCounters {
    /// Packets delivered.
    pub packets: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// `read()` calls that returned a frame.
    pub reads: u64,
    /// Frames that were malformed or unsupported, and dropped.
    pub dropped: u64,
}

/// Transmit-side counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxCounters {
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Bytes handed to the kernel.
    pub bytes: u64,
    /// `write()` calls.
    pub writes: u64,
}

/// Receive state of one queue.
#[derive(Debug, Default)]
pub struct Rx {
    /// Counters since the queue was opened.
    pub counters: RxCounters,
}

impl Rx {
    /// A receiver for a device without a virtio header.
    pub fn new() -> Self {
        Rx::default()
    }

    /// Reads as many packets as are ready and fit into `slab` (end to end),
    /// writing each length to `lens`. Returns the number of packets; `0` means
    /// nothing is ready now. Never waits.
    ///
    /// `slab` must have room for [`MAX_PACKET`] bytes, or the call fails with
    /// [`Error::InvalidArgument`].
    pub fn recv(&mut self, dev: &Device, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
        if slab.len() < MAX_PACKET {
            return Err(Error::InvalidArgument(format!(
                "slab of {} bytes is smaller than the largest packet ({MAX_PACKET})",
                slab.len()
            )));
        }
        let mut pos = 0usize;
        let mut count = 0usize;
        while count < lens.len() && slab.len() - pos >= MAX_PACKET {
            match dev.read(&mut slab[pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.counters.reads += 1;
                    lens[count] = n as u32;
                    count += 1;
                    pos += n;
                    self.counters.packets += 1;
                    self.counters.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if count > 0 => break,
                Err(e) => return Err(Error::sys("read", e)),
            }
        }
        Ok(count)
    }
}

/// Transmit state of one queue.
#[derive(Debug, Default)]
pub struct Tx {
    /// Counters since the queue was opened.
    pub counters: TxCounters,
}

impl Tx {
    /// A transmitter for a device without a virtio header.
    pub fn new() -> Self {
        Tx::default()
    }

    /// Writes whole packets in order, one `write()` each. Returns how many
    /// were written: fewer than given means the kernel would block; wait for
    /// writability and send the rest.
    pub fn send(&mut self, dev: &Device, packets: &[&[u8]]) -> Result<usize> {
        let mut done = 0usize;
        for p in packets {
            match dev.write(p) {
                Ok(_) => {
                    self.counters.writes += 1;
                    self.counters.packets += 1;
                    self.counters.bytes += p.len() as u64;
                    done += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if done > 0 => break,
                Err(e) => return Err(Error::sys("write", e)),
            }
        }
        Ok(done)
    }
}
