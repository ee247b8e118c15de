// The on-disk layout of a kiln bundle, in one place. docs/bundle-format.md explains every field
// and every check the reader makes; this header is the single source of the numbers.
//
// Layout (offsets from the start of the bundle, every number little-endian):
//
//   [ header        ]  kHeaderSize bytes (v1 to v3); header_size says how many, so it can grow
//   [ entry table   ]  image_count entries of entry_size bytes, one per image
//   [ string refs   ]  ref_count {offset, length} pairs into the string bytes
//   [ string bytes  ]  kernel names and metadata keys/values, each stored once, NUL-terminated
//   [ kernel index  ]  v4: every kernel name once, sorted, with the images that may hold it
//   [ image data    ]  stored (possibly compressed) images, each at a multiple of kImageAlignment
//   [ zero padding  ]  up to total_size, a multiple of kBundleAlignment, so bundles concatenate
//
// The structs below document the layout and prove (static_assert) that it has no hidden padding,
// but they are never copied to or from the file with memcpy: every field is encoded and decoded
// explicitly as little-endian through visit_fields(), whatever the host's byte order.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

#include "kiln/little_endian.hpp"

namespace kiln::format {

inline constexpr std::array<std::uint8_t, 8> kMagic = {'K', 'I', 'L', 'N', 'B', 'N', 'D', 'L'};

// The newest format version: the newest this reader understands, and the one the writer writes.
//
// THE RULE: any change to the layout or to the meaning of a field (a new field, a new codec, a
// new check that old files could fail) bumps kFormatVersion and adds a golden bundle of the new
// version to tests/golden/ (see tests/unit/test_bundle_golden.cpp). Goldens of older versions stay:
// the reader must keep reading them, or the golden test must be changed on purpose to expect the
// "unsupported version" error. header_size and entry_size let a later version append fields while
// every v1 offset stays where it is.
//
// Versions: 1, the first. 2 adds tables_checksum (in what v1 reserved), so a reader can check the
// header and tables alone and each image as it is extracted, without reading the whole bundle.
// 3 adds codec lz4 (kCodecLz4), an LZ4 block that decodes several times faster than zstd.
// 4 adds the kernel index (in what v1 to v3 reserved): a reader finds a kernel and the images that
// may hold it by a binary search, instead of indexing every image's list of names at each start.
inline constexpr std::uint32_t kFormatVersion = 4;
inline constexpr std::uint32_t kOldestReadableVersion = 1;
inline constexpr std::uint32_t kFirstVersionWithTablesChecksum = 2;
inline constexpr std::uint32_t kFirstVersionWithLz4 = 3;
inline constexpr std::uint32_t kFirstVersionWithKernelIndex = 4;

inline constexpr std::uint64_t kBundleAlignment = 8;  // total_size, and so the start of a concatenated bundle
inline constexpr std::uint64_t kSectionAlignment = 8; // entries, refs, string bytes
inline constexpr std::uint64_t kImageAlignment = 64;  // each image's stored bytes: usable in place

// "No image" in the duplicate_of and dictionary fields.
inline constexpr std::uint32_t kNoImage = 0xFFFF'FFFFu;

// Reader limits: a bundle that needs more is rejected before anything is allocated.
inline constexpr std::uint64_t kMaxImageRawSize = std::uint64_t{1} << 30;   // 1 GiB per image
inline constexpr std::uint32_t kMaxImageCount = 1u << 20;
inline constexpr std::uint32_t kMaxDictionaryDepth = 16;  // longest chain image -> dictionary -> ...
inline constexpr std::uint64_t kMaxNameReferences = std::uint64_t{1} << 20;  // kernel names over all images
inline constexpr std::uint64_t kMaxNameBytes = std::uint64_t{64} << 20;      // their bytes over all images
// Metadata keys and values together: refs may share string bytes, so without a bound a small file
// could make a reader copy one long value millions of times.
inline constexpr std::uint64_t kMaxMetadataBytes = std::uint64_t{1} << 20;
// (kernel, candidate image) pairs, before kernels with the same candidates share a set: what the
// kernel index of a bundle with no index (v1-v3) expands to, where every image that lists no
// kernels is a candidate of every kernel.
inline constexpr std::uint64_t kMaxIndexPairs = std::uint64_t{1} << 24;
// A zstd block (RFC 8878) yields at most 128 KiB and takes at least 4 bytes (3-byte header plus
// content), so no frame inflates more than this ratio: a larger declared raw size is a lie.
inline constexpr std::uint64_t kZstdMaxExpansion = (std::uint64_t{128} << 10) / 4;
// An LZ4 block is a run of sequences (token, length bytes, literals, 2-byte offset, length bytes):
// a literal yields 1 raw byte, a length byte adds at most 255 to a length, and a token with its
// offset makes a match of at most 4 + 15 bytes. So n stored bytes yield at most 255 n raw bytes:
// a larger declared raw size is a lie.
inline constexpr std::uint64_t kLz4MaxExpansion = 255;

// Codec ids on disk (kiln::Codec has the same values).
inline constexpr std::uint16_t kCodecNone = 0;
inline constexpr std::uint16_t kCodecZstd = 1;  // one zstd frame that declares its content size
inline constexpr std::uint16_t kCodecLz4 = 2;   // one LZ4 block (not a frame); version 3 on, no dictionary

// Image kinds on disk (not kiln::ImageKind's values, which may be reordered freely).
inline constexpr std::uint8_t kKindCubin = 0;
inline constexpr std::uint8_t kKindPtx = 1;
inline constexpr std::uint8_t kKindSource = 2;

inline constexpr std::uint8_t kVariantPlain = 0;     // sm_90
inline constexpr std::uint8_t kVariantSpecific = 1;  // sm_90a
inline constexpr std::uint8_t kVariantFamily = 2;    // sm_100f

struct Header {
  std::uint8_t magic[8];             //   0  "KILNBNDL"
  std::uint32_t format_version;      //   8  kOldestReadableVersion..kFormatVersion
  std::uint32_t header_size;         //  12  bytes of header; entries may start no earlier
  std::uint64_t total_size;          //  16  bytes of the bundle, padding included; multiple of 8
  std::uint64_t header_checksum;     //  24  checksum64 of the header_size header bytes, this field as 0
  std::uint64_t content_checksum;    //  32  checksum64 of bytes [header_size, total_size)
  std::uint32_t image_count;         //  40  entries in the table
  std::uint32_t entry_size;          //  44  bytes per entry (kEntrySize in v1)
  std::uint64_t entries_offset;      //  48  entry table
  std::uint64_t refs_offset;         //  56  string refs
  std::uint32_t ref_count;           //  64
  std::uint32_t metadata_count;      //  68  key/value pairs: refs [metadata_first_ref, +2*count)
  std::uint32_t metadata_first_ref;  //  72
  std::uint32_t kernel_count;        //  76  v4: entries in the kernel index; v1-v3: 0
  std::uint64_t strings_offset;      //  80  string bytes
  std::uint64_t strings_size;        //  88
  std::uint64_t data_offset;         //  96  image data area; a multiple of kImageAlignment
  std::uint64_t data_size;           // 104
  std::uint64_t tables_checksum;     // 112  v2: checksum64 of bytes [header_size, data_offset); v1: 0
  std::uint64_t index_offset;        // 120  v4: the kernel index section; v1-v3: 0
};
inline constexpr std::size_t kHeaderSize = 128;

struct Entry {
  std::uint8_t kind;                 //   0  kKindCubin, kKindPtx, kKindSource
  std::uint8_t arch_variant;         //   1  kVariant*; 0 for source
  std::uint8_t arch_major;           //   2  9 for sm_90; 0 for source
  std::uint8_t arch_minor;           //   3  0..9
  std::uint16_t codec;               //   4  kCodec*; 0 for a duplicate
  std::uint16_t reserved0;           //   6  0
  std::uint32_t duplicate_of;        //   8  earlier image with identical raw bytes, or kNoImage
  std::uint32_t dictionary;          //  12  earlier image whose raw bytes prefix this one's zstd frame, or kNoImage (always for lz4)
  std::uint64_t data_offset;         //  16  stored bytes, from the start of the bundle; 0 for a duplicate
  std::uint64_t stored_size;         //  24  0 for a duplicate
  std::uint64_t raw_size;            //  32  bytes after decompression; 1..kMaxImageRawSize
  std::uint64_t content_hash;        //  40  checksum64 of the raw bytes
  std::uint64_t stored_checksum;     //  48  checksum64 of the stored bytes; 0 for a duplicate
  std::uint32_t names_first_ref;     //  56  kernel names: refs [names_first_ref, +names_count)
  std::uint32_t names_count;         //  60
};
inline constexpr std::size_t kEntrySize = 64;

// A string: bytes [offset, offset + length) of the string area (a NUL follows each, for tools).
struct StringRef {
  std::uint32_t offset;              //   0
  std::uint32_t length;              //   4
};
inline constexpr std::size_t kStringRefSize = 8;

// The kernel index section (v4), at index_offset, after the string bytes and before the image data:
//   IndexHead; kernel_count IndexEntry records, sorted by name (bytewise, a prefix first; each name
//   once); set_count CandidateSet records; candidate_count image numbers (uint32 each). A kernel's
//   candidates are the images that list it or list no kernels, in ascending order; kernels with
//   the same candidates (one source file's) share a set, numbered as the entries first name them.
struct IndexHead {
  std::uint32_t set_count;           //   0  CandidateSet records after the entries
  std::uint32_t candidate_count;     //   4  image numbers after the sets
};
inline constexpr std::size_t kIndexHeadSize = 8;

struct IndexEntry {
  std::uint32_t name_ref;            //   0  the kernel's mangled name: a string ref
  std::uint32_t set;                 //   4  its candidates: a CandidateSet
};
inline constexpr std::size_t kIndexEntrySize = 8;

struct CandidateSet {
  std::uint32_t first_candidate;     //   0  where the set before ends (0 for the first)
  std::uint32_t candidates;          //   4  image numbers in the set
};
inline constexpr std::size_t kCandidateSetSize = 8;
inline constexpr std::size_t kCandidateSize = 4;

static_assert(std::is_standard_layout_v<Header> && sizeof(Header) == kHeaderSize,
              "Header must have exactly the documented fields, no padding");
static_assert(std::is_standard_layout_v<Entry> && sizeof(Entry) == kEntrySize,
              "Entry must have exactly the documented fields, no padding");
static_assert(std::is_standard_layout_v<StringRef> && sizeof(StringRef) == kStringRefSize,
              "StringRef must have exactly the documented fields, no padding");
static_assert(std::is_standard_layout_v<IndexHead> && sizeof(IndexHead) == kIndexHeadSize,
              "IndexHead must have exactly the documented fields, no padding");
static_assert(std::is_standard_layout_v<IndexEntry> && sizeof(IndexEntry) == kIndexEntrySize,
              "IndexEntry must have exactly the documented fields, no padding");
static_assert(std::is_standard_layout_v<CandidateSet> && sizeof(CandidateSet) == kCandidateSetSize,
              "CandidateSet must have exactly the documented fields, no padding");
static_assert(offsetof(Header, index_offset) + sizeof(Header::index_offset) == kHeaderSize);
static_assert(offsetof(Entry, names_count) + sizeof(Entry::names_count) == kEntrySize);
static_assert(offsetof(Header, header_checksum) == 24, "docs/bundle-format.md names this offset");

// Calls visit(field, offset) for every field, in layout order: the one list that both the
// encoder and the decoder walk, so the two cannot disagree.
template <class HeaderRef, class Visit>
  requires std::is_same_v<std::remove_const_t<HeaderRef>, Header>
constexpr void visit_fields(HeaderRef& h, Visit&& visit) {
  visit(h.magic, offsetof(Header, magic));
  visit(h.format_version, offsetof(Header, format_version));
  visit(h.header_size, offsetof(Header, header_size));
  visit(h.total_size, offsetof(Header, total_size));
  visit(h.header_checksum, offsetof(Header, header_checksum));
  visit(h.content_checksum, offsetof(Header, content_checksum));
  visit(h.image_count, offsetof(Header, image_count));
  visit(h.entry_size, offsetof(Header, entry_size));
  visit(h.entries_offset, offsetof(Header, entries_offset));
  visit(h.refs_offset, offsetof(Header, refs_offset));
  visit(h.ref_count, offsetof(Header, ref_count));
  visit(h.metadata_count, offsetof(Header, metadata_count));
  visit(h.metadata_first_ref, offsetof(Header, metadata_first_ref));
  visit(h.kernel_count, offsetof(Header, kernel_count));
  visit(h.strings_offset, offsetof(Header, strings_offset));
  visit(h.strings_size, offsetof(Header, strings_size));
  visit(h.data_offset, offsetof(Header, data_offset));
  visit(h.data_size, offsetof(Header, data_size));
  visit(h.tables_checksum, offsetof(Header, tables_checksum));
  visit(h.index_offset, offsetof(Header, index_offset));
}

template <class EntryRef, class Visit>
  requires std::is_same_v<std::remove_const_t<EntryRef>, Entry>
constexpr void visit_fields(EntryRef& e, Visit&& visit) {
  visit(e.kind, offsetof(Entry, kind));
  visit(e.arch_variant, offsetof(Entry, arch_variant));
  visit(e.arch_major, offsetof(Entry, arch_major));
  visit(e.arch_minor, offsetof(Entry, arch_minor));
  visit(e.codec, offsetof(Entry, codec));
  visit(e.reserved0, offsetof(Entry, reserved0));
  visit(e.duplicate_of, offsetof(Entry, duplicate_of));
  visit(e.dictionary, offsetof(Entry, dictionary));
  visit(e.data_offset, offsetof(Entry, data_offset));
  visit(e.stored_size, offsetof(Entry, stored_size));
  visit(e.raw_size, offsetof(Entry, raw_size));
  visit(e.content_hash, offsetof(Entry, content_hash));
  visit(e.stored_checksum, offsetof(Entry, stored_checksum));
  visit(e.names_first_ref, offsetof(Entry, names_first_ref));
  visit(e.names_count, offsetof(Entry, names_count));
}

template <class RefRef, class Visit>
  requires std::is_same_v<std::remove_const_t<RefRef>, StringRef>
constexpr void visit_fields(RefRef& r, Visit&& visit) {
  visit(r.offset, offsetof(StringRef, offset));
  visit(r.length, offsetof(StringRef, length));
}

template <class HeadRef, class Visit>
  requires std::is_same_v<std::remove_const_t<HeadRef>, IndexHead>
constexpr void visit_fields(HeadRef& h, Visit&& visit) {
  visit(h.set_count, offsetof(IndexHead, set_count));
  visit(h.candidate_count, offsetof(IndexHead, candidate_count));
}

template <class IndexEntryRef, class Visit>
  requires std::is_same_v<std::remove_const_t<IndexEntryRef>, IndexEntry>
constexpr void visit_fields(IndexEntryRef& e, Visit&& visit) {
  visit(e.name_ref, offsetof(IndexEntry, name_ref));
  visit(e.set, offsetof(IndexEntry, set));
}

template <class SetRef, class Visit>
  requires std::is_same_v<std::remove_const_t<SetRef>, CandidateSet>
constexpr void visit_fields(SetRef& c, Visit&& visit) {
  visit(c.first_candidate, offsetof(CandidateSet, first_candidate));
  visit(c.candidates, offsetof(CandidateSet, candidates));
}

// Little-endian load/store of one value: kiln/little_endian.hpp.
using kiln::load_le;
using kiln::store_le;

// Decodes a record (Header, Entry, StringRef, IndexHead, IndexEntry, CandidateSet) from `bytes`, which holds at least sizeof(Record).
template <class Record>
constexpr Record decode(const std::uint8_t* bytes) noexcept {
  Record record{};
  visit_fields(record, [bytes]<class Field>(Field& field, std::size_t offset) {
    if constexpr (std::is_array_v<Field>) {
      for (std::size_t i = 0; i < std::extent_v<Field>; ++i) field[i] = bytes[offset + i];
    } else {
      field = load_le<Field>(bytes + offset);
    }
  });
  return record;
}

// Encodes a record into `bytes`, which holds at least sizeof(Record).
template <class Record>
constexpr void encode(const Record& record, std::uint8_t* bytes) noexcept {
  visit_fields(record, [bytes]<class Field>(const Field& field, std::size_t offset) {
    if constexpr (std::is_array_v<Field>) {
      for (std::size_t i = 0; i < std::extent_v<Field>; ++i) bytes[offset + i] = field[i];
    } else {
      store_le<Field>(bytes + offset, field);
    }
  });
}

// --- Overflow-safe bounds arithmetic: every offset and size read from a file goes through these. ---

// True when [offset, offset + size) lies within [0, limit). Never overflows.
constexpr bool checked_range(std::uint64_t offset, std::uint64_t size, std::uint64_t limit) noexcept {
  return offset <= limit && size <= limit - offset;
}

// count * size, or false when it does not fit in 64 bits.
constexpr bool checked_multiply(std::uint64_t count, std::uint64_t size, std::uint64_t& product) noexcept {
  if (size != 0 && count > std::numeric_limits<std::uint64_t>::max() / size) return false;
  product = count * size;
  return true;
}

constexpr bool is_aligned(std::uint64_t value, std::uint64_t alignment) noexcept { return value % alignment == 0; }

// value rounded up to a multiple of `alignment` (a power of two); the writer's sizes are far from overflow.
constexpr std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  return (value + alignment - 1) & ~(alignment - 1);
}

}  // namespace kiln::format
