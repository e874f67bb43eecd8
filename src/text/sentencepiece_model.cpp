#include "l4q/text/sentencepiece_model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "l4q/error.h"
#include "text/protobuf_wire.h"

namespace l4q {
namespace {

// Field numbers of sentencepiece_model.proto (the descriptor shipped in sentencepiece 0.2.0).
namespace field {
constexpr uint32_t kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3,
                   kModelDenormalizerSpec = 5;
constexpr uint32_t kPiecePiece = 1, kPieceScore = 2, kPieceType = 3;
constexpr uint32_t kTrainerModelType = 3, kTrainerVocabSize = 4,
                   kTrainerTreatWhitespaceAsSuffix = 24, kTrainerByteFallback = 35,
                   kTrainerUnkId = 40, kTrainerBosId = 41, kTrainerEosId = 42, kTrainerPadId = 43,
                   kTrainerUnkSurface = 44, kTrainerUnkPiece = 45, kTrainerBosPiece = 46,
                   kTrainerEosPiece = 47, kTrainerPadPiece = 48;
constexpr uint32_t kNormName = 1, kNormPrecompiledCharsmap = 2, kNormAddDummyPrefix = 3,
                   kNormRemoveExtraWhitespaces = 4, kNormEscapeWhitespaces = 5;
}  // namespace field

// int32 fields travel as varints; protobuf keeps the low 32 bits.
int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

float as_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string read_string(pb::Reader& r, const pb::FieldTag& t, const char* name) {
  r.expect_wire(t, pb::kLengthDelimited, name);
  return std::string(r.read_length_delimited());
}

int32_t read_int32(pb::Reader& r, const pb::FieldTag& t, const char* name) {
  r.expect_wire(t, pb::kVarint, name);
  return as_int32(r.read_varint());
}

bool read_bool(pb::Reader& r, const pb::FieldTag& t, const char* name) {
  r.expect_wire(t, pb::kVarint, name);
  return r.read_varint() != 0;
}

// Keeps an unrecognised field's bytes (tag included) so the writer can put it back.
void keep_unknown(pb::Reader& r, const pb::FieldTag& t, std::string& unknown) {
  r.skip(t);
  const auto raw = r.raw_field(t);
  unknown.append(raw.data(), raw.size());
}

// Sub-message readers. A repeated occurrence of a singular message field merges into the
// same struct, as protobuf does.
void parse_piece(std::string_view data, size_t base, const std::string& where,
                 SentencePieceEntry& e) {
  pb::Reader r(data, where, base);
  while (!r.done()) {
    const auto t = r.next_field();
    switch (t.number) {
      case field::kPiecePiece: e.piece = read_string(r, t, "piece"); break;
      case field::kPieceScore:
        r.expect_wire(t, pb::kFixed32, "score");
        e.score = as_float(r.read_fixed32());
        break;
      case field::kPieceType: {
        r.expect_wire(t, pb::kVarint, "type");
        const size_t at = r.pos();
        const uint64_t v = r.read_varint();
        if (v < 1 || v > 6)
          r.fail_at(at, detail::concat("field 3 (type): expected 1..6 (normal, unknown, control, "
                                       "user defined, unused, byte), got ", as_int32(v)));
        e.type = static_cast<SentencePieceType>(v);
        break;
      }
      default: keep_unknown(r, t, e.unknown_fields);
    }
  }
}

void parse_trainer_spec(std::string_view data, size_t base, const std::string& where,
                        SentencePieceTrainerSpec& s) {
  pb::Reader r(data, where, base);
  while (!r.done()) {
    const auto t = r.next_field();
    switch (t.number) {
      case field::kTrainerModelType: {
        r.expect_wire(t, pb::kVarint, "model_type");
        const size_t at = r.pos();
        const uint64_t v = r.read_varint();
        if (v < 1 || v > 4)
          r.fail_at(at, detail::concat("field 3 (model_type): expected 1..4 (unigram, bpe, word, "
                                       "char), got ", as_int32(v)));
        s.model_type = static_cast<SentencePieceModelType>(v);
        break;
      }
      case field::kTrainerVocabSize: s.vocab_size = read_int32(r, t, "vocab_size"); break;
      case field::kTrainerTreatWhitespaceAsSuffix:
        s.treat_whitespace_as_suffix = read_bool(r, t, "treat_whitespace_as_suffix");
        break;
      case field::kTrainerByteFallback: s.byte_fallback = read_bool(r, t, "byte_fallback"); break;
      case field::kTrainerUnkId: s.unk_id = read_int32(r, t, "unk_id"); break;
      case field::kTrainerBosId: s.bos_id = read_int32(r, t, "bos_id"); break;
      case field::kTrainerEosId: s.eos_id = read_int32(r, t, "eos_id"); break;
      case field::kTrainerPadId: s.pad_id = read_int32(r, t, "pad_id"); break;
      case field::kTrainerUnkSurface: s.unk_surface = read_string(r, t, "unk_surface"); break;
      case field::kTrainerUnkPiece: s.unk_piece = read_string(r, t, "unk_piece"); break;
      case field::kTrainerBosPiece: s.bos_piece = read_string(r, t, "bos_piece"); break;
      case field::kTrainerEosPiece: s.eos_piece = read_string(r, t, "eos_piece"); break;
      case field::kTrainerPadPiece: s.pad_piece = read_string(r, t, "pad_piece"); break;
      default: keep_unknown(r, t, s.unknown_fields);
    }
  }
}

void parse_normalizer_spec(std::string_view data, size_t base, const std::string& where,
                           SentencePieceNormalizerSpec& s) {
  pb::Reader r(data, where, base);
  while (!r.done()) {
    const auto t = r.next_field();
    switch (t.number) {
      case field::kNormName: s.name = read_string(r, t, "name"); break;
      case field::kNormPrecompiledCharsmap:
        s.precompiled_charsmap = read_string(r, t, "precompiled_charsmap");
        break;
      case field::kNormAddDummyPrefix: s.add_dummy_prefix = read_bool(r, t, "add_dummy_prefix"); break;
      case field::kNormRemoveExtraWhitespaces:
        s.remove_extra_whitespaces = read_bool(r, t, "remove_extra_whitespaces");
        break;
      case field::kNormEscapeWhitespaces:
        s.escape_whitespaces = read_bool(r, t, "escape_whitespaces");
        break;
      default: keep_unknown(r, t, s.unknown_fields);
    }
  }
}

void write_normalizer_spec(pb::Writer& w, uint32_t number, const SentencePieceNormalizerSpec& s) {
  pb::Writer m;
  if (s.name) m.bytes_field(field::kNormName, *s.name);
  if (!s.precompiled_charsmap.empty())
    m.bytes_field(field::kNormPrecompiledCharsmap, s.precompiled_charsmap);
  m.bool_field(field::kNormAddDummyPrefix, s.add_dummy_prefix);
  m.bool_field(field::kNormRemoveExtraWhitespaces, s.remove_extra_whitespaces);
  m.bool_field(field::kNormEscapeWhitespaces, s.escape_whitespaces);
  m.raw(s.unknown_fields);
  w.bytes_field(number, m.bytes());
}

// "<0x41>" exactly as sentencepiece spells byte pieces (two upper-case hex digits).
bool is_byte_piece_spelling(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return false;
  for (int i = 3; i < 5; ++i)
    if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'F'))) return false;
  return true;
}

}  // namespace

const char* sentencepiece_type_name(SentencePieceType t) {
  switch (t) {
    case SentencePieceType::kNormal: return "NORMAL";
    case SentencePieceType::kUnknown: return "UNKNOWN";
    case SentencePieceType::kControl: return "CONTROL";
    case SentencePieceType::kUserDefined: return "USER_DEFINED";
    case SentencePieceType::kUnused: return "UNUSED";
    case SentencePieceType::kByte: return "BYTE";
  }
  return "?";
}

const char* sentencepiece_model_type_name(SentencePieceModelType t) {
  switch (t) {
    case SentencePieceModelType::kUnigram: return "UNIGRAM";
    case SentencePieceModelType::kBpe: return "BPE";
    case SentencePieceModelType::kWord: return "WORD";
    case SentencePieceModelType::kChar: return "CHAR";
  }
  return "?";
}

SentencePieceModel parse_sentencepiece_model(std::string_view bytes, const std::string& source) {
  if (bytes.empty()) fail(source, ": empty SentencePiece model (no bytes)");
  SentencePieceModel m;
  pb::Reader r(bytes, source);
  while (!r.done()) {
    const auto t = r.next_field();
    switch (t.number) {
      case field::kModelPieces: {
        r.expect_wire(t, pb::kLengthDelimited, "pieces");
        const auto body = r.read_length_delimited();
        const size_t base = static_cast<size_t>(body.data() - bytes.data());
        m.pieces.emplace_back();
        parse_piece(body, base, detail::concat(source, ": piece ", m.pieces.size() - 1),
                    m.pieces.back());
        break;
      }
      case field::kModelTrainerSpec: {
        r.expect_wire(t, pb::kLengthDelimited, "trainer_spec");
        const auto body = r.read_length_delimited();
        parse_trainer_spec(body, static_cast<size_t>(body.data() - bytes.data()),
                           source + ": trainer_spec", m.trainer_spec);
        m.has_trainer_spec = true;
        break;
      }
      case field::kModelNormalizerSpec: {
        r.expect_wire(t, pb::kLengthDelimited, "normalizer_spec");
        const auto body = r.read_length_delimited();
        parse_normalizer_spec(body, static_cast<size_t>(body.data() - bytes.data()),
                              source + ": normalizer_spec", m.normalizer_spec);
        m.has_normalizer_spec = true;
        break;
      }
      case field::kModelDenormalizerSpec: {
        r.expect_wire(t, pb::kLengthDelimited, "denormalizer_spec");
        const auto body = r.read_length_delimited();
        if (!m.denormalizer_spec) m.denormalizer_spec.emplace();
        parse_normalizer_spec(body, static_cast<size_t>(body.data() - bytes.data()),
                              source + ": denormalizer_spec", *m.denormalizer_spec);
        break;
      }
      default: keep_unknown(r, t, m.unknown_fields);
    }
  }
  return m;
}

SentencePieceModel read_sentencepiece_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open SentencePiece model: ", std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(path, ": read error");
  return parse_sentencepiece_model(ss.str(), path);
}

std::string serialize_sentencepiece_model(const SentencePieceModel& m) {
  pb::Writer w;
  for (const auto& e : m.pieces) {
    pb::Writer p;
    p.bytes_field(field::kPiecePiece, e.piece);
    p.float_field(field::kPieceScore, e.score);
    if (e.type != SentencePieceType::kNormal)
      p.varint_field(field::kPieceType, static_cast<uint64_t>(e.type));
    p.raw(e.unknown_fields);
    w.bytes_field(field::kModelPieces, p.bytes());
  }
  {
    const auto& s = m.trainer_spec;
    pb::Writer t;
    t.varint_field(field::kTrainerModelType, static_cast<uint64_t>(s.model_type));
    if (s.vocab_size) t.int32_field(field::kTrainerVocabSize, *s.vocab_size);
    t.bool_field(field::kTrainerTreatWhitespaceAsSuffix, s.treat_whitespace_as_suffix);
    t.bool_field(field::kTrainerByteFallback, s.byte_fallback);
    t.int32_field(field::kTrainerUnkId, s.unk_id);
    t.int32_field(field::kTrainerBosId, s.bos_id);
    t.int32_field(field::kTrainerEosId, s.eos_id);
    t.int32_field(field::kTrainerPadId, s.pad_id);
    if (s.unk_surface) t.bytes_field(field::kTrainerUnkSurface, *s.unk_surface);
    if (!s.unk_piece.empty()) t.bytes_field(field::kTrainerUnkPiece, s.unk_piece);
    if (!s.bos_piece.empty()) t.bytes_field(field::kTrainerBosPiece, s.bos_piece);
    if (!s.eos_piece.empty()) t.bytes_field(field::kTrainerEosPiece, s.eos_piece);
    if (!s.pad_piece.empty()) t.bytes_field(field::kTrainerPadPiece, s.pad_piece);
    t.raw(s.unknown_fields);
    w.bytes_field(field::kModelTrainerSpec, t.bytes());
  }
  write_normalizer_spec(w, field::kModelNormalizerSpec, m.normalizer_spec);
  if (m.denormalizer_spec) write_normalizer_spec(w, field::kModelDenormalizerSpec, *m.denormalizer_spec);
  w.raw(m.unknown_fields);
  return w.take();
}

void write_sentencepiece_model(const SentencePieceModel& model, const std::string& path) {
  const std::string bytes = serialize_sentencepiece_model(model);
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) fail(path, ": cannot create a temporary file next to it: ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(path, ": write failed after ", done, " of ", bytes.size(), " bytes: ", std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  // mkstemp creates 0600; a model file is as public as any other output.
  ::fchmod(fd, 0644);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot flush the temporary file: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename the temporary file into place: ", std::strerror(err));
  }
}

SentencePieceModel sentencepiece_model_from_vocab(const SentencePieceVocab& v,
                                                  const std::string& source) {
  const auto n = static_cast<int64_t>(v.pieces.size());
  if (n == 0) fail(source, ": empty vocabulary");
  if (n > INT32_MAX) fail(source, ": ", n, " pieces do not fit 32-bit token ids");
  if (static_cast<int64_t>(v.scores.size()) != n)
    fail(source, ": scores: expected ", n, " entries (one per token), got ", v.scores.size());
  if (!v.types.empty() && static_cast<int64_t>(v.types.size()) != n)
    fail(source, ": token types: expected ", n, " entries (one per token), got ", v.types.size());
  const std::pair<const char*, int32_t> specials[] = {
      {"bos", v.bos_id}, {"eos", v.eos_id}, {"pad", v.pad_id}};
  for (const auto& [name, id] : specials)
    if (id < -1 || id >= n) fail(source, ": ", name, " id ", id, " is outside [0, ", n, ") and not -1");
  if (v.unk_id < 0 || v.unk_id >= n)
    fail(source, ": unk id ", v.unk_id, " is outside [0, ", n, ")");

  SentencePieceModel m;
  m.pieces.resize(static_cast<size_t>(n));
  bool any_byte = false;
  for (int64_t i = 0; i < n; ++i) {
    auto& e = m.pieces[static_cast<size_t>(i)];
    e.piece = v.pieces[static_cast<size_t>(i)];
    e.score = v.scores[static_cast<size_t>(i)];
    if (!v.types.empty()) {
      const int32_t t = v.types[static_cast<size_t>(i)];
      if (t < 1 || t > 6)
        fail(source, ": token ", i, " ('", e.piece, "'): type ", t,
             " is not a SentencePiece type (1 normal, 2 unknown, 3 control, 4 user defined, "
             "5 unused, 6 byte)");
      e.type = static_cast<SentencePieceType>(t);
    } else if (i == v.unk_id) {
      e.type = SentencePieceType::kUnknown;
    } else if (i == v.bos_id || i == v.eos_id || i == v.pad_id) {
      e.type = SentencePieceType::kControl;
    } else if (is_byte_piece_spelling(e.piece)) {
      e.type = SentencePieceType::kByte;
    }
    any_byte = any_byte || e.type == SentencePieceType::kByte;
  }
  const auto& unk = m.pieces[static_cast<size_t>(v.unk_id)];
  if (unk.type != SentencePieceType::kUnknown)
    fail(source, ": unk id ", v.unk_id, " is '", unk.piece, "' of type ",
         sentencepiece_type_name(unk.type), "; expected the UNKNOWN piece");

  auto& t = m.trainer_spec;
  m.has_trainer_spec = true;
  t.model_type = SentencePieceModelType::kBpe;
  t.vocab_size = static_cast<int32_t>(n);
  t.byte_fallback = any_byte;
  t.unk_id = v.unk_id;
  t.bos_id = v.bos_id;
  t.eos_id = v.eos_id;
  t.pad_id = v.pad_id;
  t.unk_piece = unk.piece;
  if (v.bos_id >= 0) t.bos_piece = m.pieces[static_cast<size_t>(v.bos_id)].piece;
  if (v.eos_id >= 0) t.eos_piece = m.pieces[static_cast<size_t>(v.eos_id)].piece;
  if (v.pad_id >= 0) t.pad_piece = m.pieces[static_cast<size_t>(v.pad_id)].piece;

  auto& ns = m.normalizer_spec;
  m.has_normalizer_spec = true;
  ns.name = "identity";
  ns.add_dummy_prefix = v.add_dummy_prefix;
  ns.remove_extra_whitespaces = false;
  ns.escape_whitespaces = true;
  return m;
}

}  // namespace l4q
