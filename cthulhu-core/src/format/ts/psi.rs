//! PSI: the program association and program map tables (ISO/IEC 13818-1 §2.4.4),
//! their CRC-32, and the reassembly of sections from packet payloads.

/// Table id of the program association section.
pub(super) const TABLE_PAT: u8 = 0x00;
/// Table id of the program map section.
pub(super) const TABLE_PMT: u8 = 0x02;
/// Descriptor tag of the registration descriptor.
pub(super) const DESC_REGISTRATION: u8 = 0x05;
/// Descriptor tag of the DVB extension descriptor.
pub(super) const DESC_EXTENSION: u8 = 0x7F;
/// DVB extension descriptor tag of the Opus audio descriptor.
pub(super) const EXT_OPUS: u8 = 0x80;
/// The largest section: 3 header bytes and a 1021-byte section_length.
const MAX_SECTION: usize = 1024;

/// The CRC-32 of MPEG-2 sections (polynomial 0x04C11DB7, initial value all ones, no
/// reflection, no final XOR). Over a whole section, CRC field included, it is 0.
pub(super) fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        let index = usize::from(((crc >> 24) as u8) ^ b);
        (crc << 8) ^ CRC_TABLE.get(index).copied().unwrap_or(0)
    })
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// A section with the long (syntax indicator 1) header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Section<'a> {
    pub(super) table_id: u8,
    /// transport_stream_id (PAT) or program_number (PMT).
    pub(super) id: u16,
    pub(super) version: u8,
    pub(super) current: bool,
    /// The bytes after the 8-byte header, before the CRC.
    pub(super) body: &'a [u8],
}

/// Parses the long section header and checks length and CRC.
pub(super) fn parse_section(data: &[u8]) -> Result<Section<'_>, &'static str> {
    let &[table_id, l0, l1, i0, i1, v, _section_number, _last, ..] = data else {
        return Err("truncated section header");
    };
    if l0 & 0x80 == 0 {
        return Err("section_syntax_indicator not set");
    }
    let len = usize::from(u16::from_be_bytes([l0 & 0x0F, l1]));
    let section = data.get(..3 + len).ok_or("truncated section")?;
    if len < 9 {
        return Err("section_length too short");
    }
    if crc32(section) != 0 {
        return Err("CRC mismatch");
    }
    Ok(Section {
        table_id,
        id: u16::from_be_bytes([i0, i1]),
        version: (v >> 1) & 0x1F,
        current: v & 0x01 != 0,
        body: section.get(8..section.len() - 4).unwrap_or(&[]),
    })
}

/// The programs of a PAT body: (program_number, PID); program 0 (the network PID)
/// left out.
pub(super) fn parse_pat(body: &[u8]) -> Vec<(u16, u16)> {
    body.chunks_exact(4)
        .filter_map(|c| {
            let &[p0, p1, d0, d1] = c else { return None };
            let program = u16::from_be_bytes([p0, p1]);
            (program != 0).then(|| (program, u16::from_be_bytes([d0 & 0x1F, d1])))
        })
        .collect()
}

/// One elementary stream of a PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PmtStream {
    pub(super) stream_type: u8,
    pub(super) pid: u16,
    /// The format_identifier of a registration descriptor, if any.
    pub(super) registration: Option<[u8; 4]>,
    /// The channel_config_code of a DVB Opus extension descriptor, if any.
    pub(super) opus_channel_config: Option<u8>,
}

/// A parsed PMT body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pmt {
    pub(super) pcr_pid: u16,
    pub(super) streams: Vec<PmtStream>,
}

/// Parses a PMT body (after the 8-byte section header, before the CRC).
pub(super) fn parse_pmt(body: &[u8]) -> Result<Pmt, &'static str> {
    let &[p0, p1, i0, i1, ref rest @ ..] = body else {
        return Err("truncated PMT");
    };
    let pcr_pid = u16::from_be_bytes([p0 & 0x1F, p1]);
    let info_len = usize::from(u16::from_be_bytes([i0 & 0x0F, i1]));
    let (program_info, mut rest) = rest
        .split_at_checked(info_len)
        .ok_or("program_info_length past the end")?;
    let program_registration = descriptors(program_info).find_map(registration);
    let mut streams = Vec::new();
    while !rest.is_empty() {
        let &[stream_type, e0, e1, l0, l1, ref tail @ ..] = rest else {
            return Err("truncated PMT stream entry");
        };
        let es_len = usize::from(u16::from_be_bytes([l0 & 0x0F, l1]));
        let (info, tail) = tail
            .split_at_checked(es_len)
            .ok_or("ES_info_length past the end")?;
        streams.push(PmtStream {
            stream_type,
            pid: u16::from_be_bytes([e0 & 0x1F, e1]),
            registration: descriptors(info)
                .find_map(registration)
                .or(program_registration),
            opus_channel_config: descriptors(info).find_map(|(tag, data)| match (tag, data) {
                (DESC_EXTENSION, &[EXT_OPUS, code, ..]) => Some(code),
                _ => None,
            }),
        });
        rest = tail;
    }
    Ok(Pmt { pcr_pid, streams })
}

fn registration((tag, data): (u8, &[u8])) -> Option<[u8; 4]> {
    match (tag, data) {
        (DESC_REGISTRATION, &[a, b, c, d, ..]) => Some([a, b, c, d]),
        _ => None,
    }
}

/// Iterates over (tag, data) descriptors; stops at the first one that runs past the
/// end.
fn descriptors(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let &[tag, len, ref rest @ ..] = data else {
            return None;
        };
        let (body, rest) = rest.split_at_checked(usize::from(len))?;
        data = rest;
        Some((tag, body))
    })
}

/// Writes a long-header section: header, `body`, CRC.
fn write_section(table_id: u8, id: u16, version: u8, body: &[u8]) -> Vec<u8> {
    // section_length counts the 5 header bytes after it, the body and the CRC
    let len = (5 + body.len() + 4) as u16;
    let mut out = Vec::with_capacity(3 + usize::from(len));
    out.push(table_id);
    out.extend_from_slice(&(0xB000 | (len & 0x0FFF)).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0xC1 | (version & 0x1F) << 1);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(body);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A PAT with one program.
pub(super) fn write_pat(transport_stream_id: u16, program: u16, pmt_pid: u16) -> Vec<u8> {
    let mut body = program.to_be_bytes().to_vec();
    body.extend_from_slice(&(0xE000 | pmt_pid).to_be_bytes());
    write_section(TABLE_PAT, transport_stream_id, 0, &body)
}

/// One stream entry of a PMT to write: stream type, PID, ES descriptors (already
/// serialized).
pub(super) type PmtEntry = (u8, u16, Vec<u8>);

/// A PMT; the caller keeps it under 1021 bytes (a few streams).
pub(super) fn write_pmt(program: u16, pcr_pid: u16, streams: &[PmtEntry]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(0xE000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&0xF000u16.to_be_bytes());
    for (stream_type, pid, descriptors) in streams {
        body.push(*stream_type);
        body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        body.extend_from_slice(&(0xF000 | (descriptors.len() as u16 & 0x0FFF)).to_be_bytes());
        body.extend_from_slice(descriptors);
    }
    write_section(TABLE_PMT, program, 0, &body)
}

/// Reassembles sections from the payloads of one PID's packets.
#[derive(Debug, Default)]
pub(super) struct SectionAssembler {
    buf: Vec<u8>,
    active: bool,
}

impl SectionAssembler {
    /// Forgets a partial section (after a continuity error).
    pub(super) fn reset(&mut self) {
        self.buf.clear();
        self.active = false;
    }

    /// Feeds one packet payload; calls `on_section` with every complete section.
    pub(super) fn push(
        &mut self,
        unit_start: bool,
        payload: &[u8],
        mut on_section: impl FnMut(&[u8]),
    ) -> Result<(), &'static str> {
        if !unit_start {
            return self.feed(payload, &mut on_section);
        }
        let Some((&pointer, rest)) = payload.split_first() else {
            self.reset();
            return Err("empty payload with a section start");
        };
        let Some((tail, head)) = rest.split_at_checked(usize::from(pointer)) else {
            self.reset();
            return Err("pointer_field past the end of the packet");
        };
        let tail_result = self.feed(tail, &mut on_section);
        self.buf.clear();
        self.active = true;
        tail_result.and(self.feed(head, &mut on_section))
    }

    fn feed(
        &mut self,
        mut data: &[u8],
        on_section: &mut impl FnMut(&[u8]),
    ) -> Result<(), &'static str> {
        while self.active {
            if self.buf.is_empty() && data.first().is_none_or(|&b| b == 0xFF) {
                // stuffing after the last section, or the packet ended exactly at a
                // section end: the next section starts with the next unit start
                self.active = false;
                return Ok(());
            }
            let total = match self.buf.get(1..3) {
                Some(&[l0, l1]) => Some(3 + usize::from(u16::from_be_bytes([l0 & 0x0F, l1]))),
                _ => None,
            };
            if total.is_some_and(|t| t > MAX_SECTION) {
                self.reset();
                return Err("section_length over 1021");
            }
            let want = total.unwrap_or(3).saturating_sub(self.buf.len());
            let (take, rest) = data.split_at(want.min(data.len()));
            self.buf.extend_from_slice(take);
            data = rest;
            if total.is_some_and(|t| self.buf.len() == t) {
                on_section(&self.buf);
                self.buf.clear();
            } else if data.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_known_pat() {
        // the PAT ffmpeg writes (transport_stream_id 1, program 1 on PID 0x1000)
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
            0x04, 0xB2,
        ];
        assert_eq!(crc32(&pat), 0);
        assert_eq!(write_pat(1, 1, 0x1000), pat);
        let s = parse_section(&pat).unwrap();
        assert_eq!((s.table_id, s.id, s.version, s.current), (0, 1, 0, true));
        assert_eq!(parse_pat(s.body), vec![(1, 0x1000)]);
        let mut bad = pat;
        bad[9] = 2;
        assert_eq!(parse_section(&bad), Err("CRC mismatch"));
    }

    #[test]
    fn pmt_round_trip_with_descriptors() {
        let opus = vec![0x05, 4, b'O', b'p', b'u', b's', 0x7F, 2, 0x80, 2];
        let pmt = write_pmt(1, 0x100, &[(0x1B, 0x100, Vec::new()), (0x06, 0x101, opus)]);
        let s = parse_section(&pmt).unwrap();
        assert_eq!(s.table_id, TABLE_PMT);
        let p = parse_pmt(s.body).unwrap();
        assert_eq!(p.pcr_pid, 0x100);
        assert_eq!(p.streams.len(), 2);
        assert_eq!(p.streams[1].registration, Some(*b"Opus"));
        assert_eq!(p.streams[1].opus_channel_config, Some(2));
        assert_eq!(p.streams[0].registration, None);
        assert!(parse_pmt(&[0xE1, 0x00, 0xF0, 0x05]).is_err());
    }

    #[test]
    fn sections_across_packets_and_several_per_packet() {
        let pat = write_pat(1, 1, 0x1000);
        let mut seen = Vec::new();
        let mut a = SectionAssembler::default();
        // two sections in one payload, then stuffing
        let mut payload = vec![0];
        payload.extend_from_slice(&pat);
        payload.extend_from_slice(&pat);
        payload.extend_from_slice(&[0xFF; 10]);
        a.push(true, &payload, |s| seen.push(s.to_vec())).unwrap();
        assert_eq!(seen.len(), 2);
        // split over three packets, the start of the next section after a pointer
        seen.clear();
        let (p1, rest) = pat.split_at(2);
        let (p2, p3) = rest.split_at(5);
        a.push(true, &[&[0][..], p1].concat(), |s| seen.push(s.to_vec()))
            .unwrap();
        a.push(false, p2, |s| seen.push(s.to_vec())).unwrap();
        let mut last = vec![p3.len() as u8];
        last.extend_from_slice(p3);
        last.extend_from_slice(&pat[..4]);
        a.push(true, &last, |s| seen.push(s.to_vec())).unwrap();
        assert_eq!(seen, vec![pat.clone()]);
        // a packet without a unit start after a complete section starts nothing
        seen.clear();
        a.reset();
        a.push(true, &[&[0][..], &pat].concat(), |s| seen.push(s.to_vec()))
            .unwrap();
        a.push(false, &pat, |s| seen.push(s.to_vec())).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(a.push(true, &[200, 1, 2], |_| {}).is_err());
        assert!(a.push(true, &[], |_| {}).is_err());
    }
}
