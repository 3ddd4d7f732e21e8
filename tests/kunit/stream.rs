// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the migration stream inside the kernel: the kernel's `crc32c()` against the
//! portable implementation, and a complete stream encoded and decoded with the kernel CRC, fed in
//! odd-sized pieces.

use kernel::prelude::*;

#[kunit_tests(qemu_vfio_pci_stream)]
mod tests {
    use kernel::prelude::*;

    use crate::{
        stream::{
            crc::{
                checksum,
                SoftCrc32c, //
            },
            Crc32c,
            Decoder,
            DeviceIdentity,
            DeviceKind,
            Encoder,
            Header,
            Sink,
            SinkError,
            Source,
            SourceError,
            SCRATCH_LEN, //
        },
        vfio::crc::KernelCrc32c,
    };

    /// Deterministic test bytes.
    fn pattern(seed: u32, len: usize) -> Result<KVVec<u8>> {
        let mut v = KVVec::with_capacity(len, GFP_KERNEL)?;
        let mut x = seed | 1;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push((x >> 24) as u8, GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn kernel_crc32c_matches_portable() -> Result {
        assert_eq!(checksum(&KernelCrc32c, b"123456789"), 0xE306_9283);
        let data = pattern(7, 4099)?;
        for len in [0usize, 1, 3, 8, 63, 64, 65, 1000, 4099] {
            let part = data.get(..len).ok_or(EINVAL)?;
            assert_eq!(KernelCrc32c.update(!0, part), SoftCrc32c.update(!0, part));
        }
        Ok(())
    }

    struct MemSource<'a> {
        regs: &'a [u8],
        mem: &'a [u8],
    }

    impl Source for MemSource<'_> {
        fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
            out.copy_from_slice(self.regs.get(..out.len()).ok_or(SourceError(22))?);
            Ok(())
        }

        fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError> {
            let start = usize::try_from(offset).map_err(|_| SourceError(22))?;
            let src = self
                .mem
                .get(start..start + out.len())
                .ok_or(SourceError(22))?;
            out.copy_from_slice(src);
            Ok(())
        }
    }

    struct MemSink {
        regs: KVVec<u8>,
        mem: KVVec<u8>,
        ended: bool,
    }

    impl Sink for MemSink {
        fn header(&mut self, _header: &Header) -> Result<(), SinkError> {
            Ok(())
        }

        fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError> {
            self.regs.clear();
            self.regs
                .extend_from_slice(regs, GFP_KERNEL)
                .map_err(|_| SinkError(12))
        }

        fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
            let start = usize::try_from(offset).map_err(|_| SinkError(22))?;
            let dst = self
                .mem
                .get_mut(start..start + data.len())
                .ok_or(SinkError(22))?;
            dst.copy_from_slice(data);
            Ok(())
        }

        fn end(&mut self) -> Result<(), SinkError> {
            self.ended = true;
            Ok(())
        }
    }

    #[test]
    fn stream_round_trip_with_kernel_crc() -> Result {
        let mem_len = 2 * crate::stream::MAX_CHUNK + 4096 + 12;
        let mem = pattern(3, mem_len)?;
        let regs = pattern(5, 32)?;
        let identity = DeviceIdentity {
            kind: DeviceKind::BochsDisplay,
            mem_size: mem_len as u64,
        };
        let mut source = MemSource {
            regs: &regs,
            mem: &mem,
        };
        let mut encoder = Encoder::new(identity, 32);
        let mut record = KVVec::from_elem(0u8, SCRATCH_LEN, GFP_KERNEL)?;
        let mut scratch = KVVec::from_elem(0u8, SCRATCH_LEN, GFP_KERNEL)?;
        let mut decoder = Decoder::new(identity);
        let mut sink = MemSink {
            regs: KVVec::new(),
            mem: KVVec::from_elem(0u8, mem_len, GFP_KERNEL)?,
            ended: false,
        };
        let mut piece = 1usize;
        while let Some(n) = encoder
            .next_record(&mut source, &KernelCrc32c, &mut record)
            .map_err(|_| EINVAL)?
        {
            let mut rest = record.get(..n).ok_or(EINVAL)?;
            while !rest.is_empty() {
                // Odd piece sizes that never line up with record boundaries.
                piece = piece * 7 % 65_521 + 1;
                let take = piece.min(rest.len());
                let (now, later) = rest.split_at(take);
                let used = decoder
                    .feed(now, &mut scratch, &KernelCrc32c, &mut sink)
                    .map_err(|_| EINVAL)?;
                assert_eq!(used, take);
                rest = later;
            }
        }
        assert!(decoder.finish().is_ok());
        assert!(sink.ended);
        assert!(sink.regs[..] == regs[..]);
        assert!(sink.mem[..] == mem[..]);
        Ok(())
    }
}
