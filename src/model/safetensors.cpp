// Checkpoint: mmap'd .safetensors files with every header field validated; save_safetensors writes one.
// Format: u64 little-endian header length N, N bytes of JSON header, then the raw tensor bytes.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "util/files.h"

namespace nanovllm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw std::runtime_error(file.string() + ": " + what);
}

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::f32}, {"BF16", DType::bf16}, {"F16", DType::f16}, {"I32", DType::i32}, {"I64", DType::i64},
      {"F8_E4M3", DType::f8e4m3}, {"F8_E5M2", DType::f8e5m2}};
  for (auto& [name, t] : kTable)
    if (s == name) {
      *out = t;
      return true;
    }
  return false;
}

// One mmap'd file; unmapped when destroyed.
struct MappedFile {
  fs::path path;
  const uint8_t* base = nullptr;
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (base) munmap(const_cast<uint8_t*>(base), size);
  }
};

struct Entry {
  Tensor tensor;
  const MappedFile* file = nullptr;
};

std::unique_ptr<MappedFile> map_file(const fs::path& path) {
  auto mf = std::make_unique<MappedFile>();
  mf->path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(e));
  }
  mf->size = static_cast<size_t>(st.st_size);
  if (mf->size < 8) {
    ::close(fd);
    fail(path, "truncated file: " + std::to_string(mf->size) + " bytes, too short for the 8-byte header length");
  }
  void* p = mmap(nullptr, mf->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail(path, std::string("cannot mmap: ") + std::strerror(e));
  mf->base = static_cast<const uint8_t*>(p);
  return mf;
}

// A mapped file split into its JSON header and the data section the tensors' offsets count from.
struct Header {
  json fields;
  const uint8_t* data;
  uint64_t data_size;
};

Header parse_header(const MappedFile& mf) {
  const fs::path& path = mf.path;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | mf.base[i];  // little-endian
  if (header_len > mf.size - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(mf.size) + " bytes): truncated or not a safetensors file");
  const char* hbeg = reinterpret_cast<const char*>(mf.base + 8);
  json header;
  try {
    header = json::parse(hbeg, hbeg + header_len);
  } catch (const json::parse_error& ex) {
    fail(path, std::string("malformed JSON header: ") + ex.what());
  }
  if (!header.is_object()) fail(path, "the header is not a JSON object");
  return Header{std::move(header), mf.base + 8 + header_len, mf.size - 8 - header_len};
}

// Where a tensor's bytes lie in the data section, for the overlap check.
struct Range { uint64_t begin, end; std::string name; };

// Checks one header entry against the data section; returns its tensor (on the host, pointing
// into the mapping) and fills `range` with its offsets.
Tensor parse_entry(const fs::path& path, const std::string& name, const json& h, const Header& header,
                   Range& range) {
  auto bad = [&](const std::string& what) { fail(path, "tensor '" + name + "': " + what); };
  if (!h.is_object()) bad("header entry is not an object");
  if (!h.contains("dtype") || !h["dtype"].is_string()) bad("missing or non-string 'dtype'");
  const std::string dt = h["dtype"].get<std::string>();
  Tensor t;
  if (!parse_dtype(dt, &t.dtype))
    fail(path, "unsupported dtype " + dt + " for tensor " + name + " in file " + path.string() +
                   " (nanovllm reads F32, BF16, F16, F8_E4M3, F8_E5M2, I32, I64)");
  if (!h.contains("shape") || !h["shape"].is_array()) bad("missing or non-list 'shape'");
  const json& shape = h["shape"];
  if (shape.size() > static_cast<size_t>(Tensor::kMaxDims))
    bad("shape " + shape.dump() + " has more than " + std::to_string(Tensor::kMaxDims) + " dimensions");
  uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ULL << 40)) bad("invalid shape " + shape.dump());
    t.shape[t.ndim++] = static_cast<int64_t>(d.get<uint64_t>());
    numel *= d.get<uint64_t>();
    if (numel > (1ULL << 40)) bad("shape " + shape.dump() + " is implausibly large");
  }
  if (!h.contains("data_offsets") || !h["data_offsets"].is_array() || h["data_offsets"].size() != 2 ||
      !h["data_offsets"][0].is_number_unsigned() || !h["data_offsets"][1].is_number_unsigned())
    bad("'data_offsets' must be two non-negative integers");
  const uint64_t b = h["data_offsets"][0].get<uint64_t>(), e2 = h["data_offsets"][1].get<uint64_t>();
  if (b > e2) bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e2) + "] are reversed");
  if (e2 > header.data_size)
    bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e2) + "] run past the end of the data (" +
        std::to_string(header.data_size) + " bytes): truncated file");
  const uint64_t want = numel * dtype_size(t.dtype);
  if (e2 - b != want)
    bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e2) + "] hold " + std::to_string(e2 - b) +
        " bytes but shape " + shape.dump() + " of " + dt + " needs " + std::to_string(want));
  t.data = const_cast<uint8_t*>(header.data + b);
  t.device = DeviceKind::cpu;
  range = {b, e2, name};
  return t;
}

// `ranges` sorted by begin.
void check_no_overlap(const fs::path& path, const std::vector<Range>& ranges) {
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      fail(path, "tensors '" + ranges[i - 1].name + "' and '" + ranges[i].name + "' overlap in the data section");
}

}  // namespace

struct Checkpoint::Impl {
  std::vector<std::unique_ptr<MappedFile>> files;
  // Tensors whose offset in the file is not a multiple of their element size (the format does not
  // promise one): copied out, so that every element is read at its own alignment.
  std::vector<std::unique_ptr<uint8_t[]>> aligned_copies;
  std::unordered_map<std::string, Entry> tensors;
  std::vector<std::string> order;  // names in file order, for names()

  void open_file(const fs::path& path);
};

void Checkpoint::Impl::open_file(const fs::path& path) {
  std::unique_ptr<MappedFile> mf = map_file(path);
  const Header header = parse_header(*mf);
  std::vector<Range> ranges;
  for (auto it = header.fields.begin(); it != header.fields.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    Range range;
    Tensor t = parse_entry(path, name, it.value(), header, range);
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
      const size_t bytes = range.end - range.begin;
      auto copy = std::make_unique<uint8_t[]>(bytes);  // new[]'s alignment covers every dtype
      std::memcpy(copy.get(), t.data, bytes);
      t.data = copy.get();
      aligned_copies.push_back(std::move(copy));
    }
    if (tensors.count(name)) {
      fail(path, "tensor '" + name + "' also appears in " + tensors[name].file->path.string());
    }
    tensors[name] = Entry{t, mf.get()};
    ranges.push_back(std::move(range));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  check_no_overlap(path, ranges);
  for (auto& r : ranges) order.push_back(r.name);
  files.push_back(std::move(mf));
}

Checkpoint::Checkpoint() : impl_(std::make_unique<Impl>()) {}
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;
Checkpoint::~Checkpoint() = default;

Checkpoint Checkpoint::open(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw std::runtime_error("model directory " + dir.string() + " does not exist");
  Checkpoint ck;
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, "missing object 'weight_map'");
    std::vector<std::string> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(index, "weight_map['" + it.key() + "'] is not a file name");
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        fail(index, "weight_map['" + it.key() + "'] = \"" + f + "\" is not a file name in the model directory");
      if (std::find(shards.begin(), shards.end(), f) == shards.end()) shards.push_back(f);
    }
    for (const auto& f : shards) {
      if (!fs::exists(dir / f)) fail(index, "shard \"" + f + "\" named in weight_map does not exist in " + dir.string());
      ck.impl_->open_file(dir / f);
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      auto found = ck.impl_->tensors.find(it.key());
      const std::string f = it.value().get<std::string>();
      if (found == ck.impl_->tensors.end())
        fail(index, "tensor '" + it.key() + "' is listed in weight_map but missing from " + (dir / f).string());
      if (found->second.file->path.filename() != f)
        fail(index, "tensor '" + it.key() + "' is mapped to " + f + " but lives in " +
                        found->second.file->path.string());
    }
  } else {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
    if (files.empty())
      throw std::runtime_error("model directory " + dir.string() +
                               " has no *.safetensors files (and no model.safetensors.index.json)");
    std::sort(files.begin(), files.end());
    for (const auto& f : files) ck.impl_->open_file(f);
  }
  return ck;
}

bool Checkpoint::contains(const std::string& name) const { return impl_->tensors.count(name) != 0; }

Tensor Checkpoint::get(const std::string& name) const {
  auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end()) throw std::runtime_error("checkpoint has no tensor '" + name + "'");
  return it->second.tensor;
}

Tensor Checkpoint::get(const std::string& name, std::initializer_list<int64_t> expected) const {
  Tensor t = get(name);
  Tensor want(nullptr, t.dtype, expected);
  bool same = want.ndim == t.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = want.shape[i] == t.shape[i];
  if (!same)
    throw std::runtime_error("tensor '" + name + "' in " + impl_->tensors.at(name).file->path.string() +
                             " has shape " + t.shape_str() + ", expected " + want.shape_str());
  return t;
}

std::vector<std::string> Checkpoint::names() const { return impl_->order; }

void Checkpoint::drop_pages(const Tensor& t) const {
  // Only a mapping's pages: a tensor copied out for its alignment lives on the heap.
  const auto* p = static_cast<const uint8_t*>(t.data);
  bool mapped = false;
  for (const auto& f : impl_->files) mapped = mapped || (p >= f->base && p < f->base + f->size);
  if (!mapped) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes()) / page * page;
  if (begin < end) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // only memory: failure is harmless
}

void save_safetensors(const fs::path& file, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in the order given, as the data section does.
  nlohmann::ordered_json header;
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) throw std::invalid_argument("save_safetensors: tensor '" + name + "' given twice");
    if (t.device != DeviceKind::cpu)
      throw std::invalid_argument("save_safetensors: tensor '" + name + "' is not in host memory");
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = nlohmann::ordered_json::array();
    for (int i = 0; i < t.ndim; ++i) e["shape"].push_back(t.shape[i]);
    e["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
    header[name] = e;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(file.string() + ": cannot create file");
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, t] : tensors) out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes()));
  out.flush();
  if (!out) throw std::runtime_error(file.string() + ": write failed (disk full?)");
}

}  // namespace nanovllm
