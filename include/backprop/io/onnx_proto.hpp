/// \file
/// \brief The ONNX messages backprop reads (ModelProto, GraphProto, NodeProto,
/// AttributeProto, TensorProto, ValueInfoProto), parsed from the wire format into
/// plain structs (detail; used by io/onnx.hpp). Field numbers follow onnx/onnx.proto
/// (IR version 8). Fields backprop does not use (doc strings, metadata, training
/// info, functions) are skipped; sub-graphs, sparse tensors and external data are
/// recorded so that using them gives a clear error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protobuf.hpp"

namespace backprop::detail::onnx {

inline constexpr std::int64_t export_ir_version = 8;
inline constexpr std::int64_t export_opset = 13;
inline constexpr std::int64_t min_import_opset = 9;
inline constexpr std::int64_t max_import_opset = 22;
/// The largest ONNX file read (protobuf's own limit for one message).
inline constexpr std::size_t max_file_bytes = std::size_t{2} << 30;

[[nodiscard]] inline std::string dims_text(const std::vector<std::int64_t>& d) {
  std::string s;
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? " x " : "") + std::to_string(d[i]);
  return d.empty() ? "a scalar" : s;
}

/// The product of dimensions read from a file, checked: each in [0, 2^31], the product
/// at most 2^31 (no overflow on hostile input).
[[nodiscard]] inline std::int64_t product(const std::vector<std::int64_t>& d) {
  constexpr std::int64_t limit = std::int64_t{1} << 31;
  std::int64_t n = 1;
  for (const auto v : d) {
    if (v < 0 || v > limit || (v != 0 && n > limit / v)) {
      throw ModelFormatError("ONNX: the shape " + dims_text(d) +
                             " has a negative dimension or more than 2^31 values");
    }
    n *= v;
  }
  return n;
}

/// TensorProto.DataType values.
enum DataType : std::int32_t { float32 = 1, int32 = 6, int64 = 7, float64 = 11 };

[[nodiscard]] inline std::string data_type_name(std::int32_t t) {
  switch (t) {
    case 1:
      return "FLOAT";
    case 2:
      return "UINT8";
    case 3:
      return "INT8";
    case 5:
      return "INT16";
    case 6:
      return "INT32";
    case 7:
      return "INT64";
    case 8:
      return "STRING";
    case 9:
      return "BOOL";
    case 10:
      return "FLOAT16";
    case 11:
      return "DOUBLE";
    case 16:
      return "BFLOAT16";
    default:
      return "data type " + std::to_string(t);
  }
}

struct Tensor {
  std::string name;
  std::vector<std::int64_t> dims;
  std::int32_t data_type = 0;
  std::vector<float> float_data;
  std::vector<std::int64_t> int_data;  // int32_data and int64_data
  std::vector<double> double_data;
  std::string_view raw_data;
  bool has_raw = false;
  bool external = false;  // data_location EXTERNAL: the values are in another file

  /// The number of elements, checked: dims non-negative, the product at most 2^31.
  [[nodiscard]] std::int64_t element_count() const {
    std::int64_t n = 1;
    for (const auto d : dims) {
      if (d < 0) throw ModelFormatError("ONNX: tensor '" + name + "' has a negative dimension");
      if (d != 0 && n > (std::int64_t{1} << 31) / d) {
        throw ModelFormatError("ONNX: tensor '" + name + "' has more than 2^31 elements");
      }
      n *= d;
    }
    return n;
  }

  /// True if the tensor stores exactly as many values as its dims say (checked without
  /// allocating: readers that size matrices from `dims` call this first).
  [[nodiscard]] bool holds_its_values() const {
    const std::int64_t n = element_count();
    const auto count = static_cast<std::size_t>(n);
    if (external) return false;
    switch (data_type) {
      case float32:
        return has_raw ? raw_data.size() == count * 4 : float_data.size() == count;
      case float64:
        return has_raw ? raw_data.size() == count * 8 : double_data.size() == count;
      case int32:
        return has_raw ? raw_data.size() == count * 4 : int_data.size() == count;
      case int64:
        return has_raw ? raw_data.size() == count * 8 : int_data.size() == count;
      default:
        return false;
    }
  }

  /// The values as doubles (float, double, int32 and int64 tensors), in row-major order.
  [[nodiscard]] std::vector<double> values() const {
    const auto where = "ONNX: tensor '" + name + "'";
    if (external) {
      throw ModelFormatError(where +
                             " keeps its values in an external file; backprop reads "
                             "self-contained models only (save without external data)");
    }
    const std::int64_t n = element_count();
    std::size_t width = 0;
    switch (data_type) {
      case float32:
      case int32:
        width = 4;
        break;
      case int64:
      case float64:
        width = 8;
        break;
      default:
        throw ModelFormatError(where + " has type " + data_type_name(data_type) +
                               "; backprop reads FLOAT, DOUBLE, INT32 and INT64 tensors");
    }
    std::vector<double> out;
    if (has_raw) {
      if (raw_data.size() != static_cast<std::size_t>(n) * width) {
        throw ModelFormatError(where + " has " + std::to_string(raw_data.size()) +
                               " bytes of raw data; its shape needs " +
                               std::to_string(static_cast<std::size_t>(n) * width));
      }
      out.resize(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < out.size(); ++i) {
        std::uint64_t u = 0;
        for (std::size_t b = 0; b < width; ++b) {
          u |= static_cast<std::uint64_t>(static_cast<unsigned char>(raw_data[i * width + b]))
               << (8 * b);
        }
        if (data_type == float32) {
          float f;
          const auto u32 = static_cast<std::uint32_t>(u);
          std::memcpy(&f, &u32, 4);
          out[i] = f;
        } else if (data_type == float64) {
          double d;
          std::memcpy(&d, &u, 8);
          out[i] = d;
        } else if (data_type == int32) {
          out[i] = static_cast<double>(static_cast<std::int32_t>(static_cast<std::uint32_t>(u)));
        } else {
          out[i] = static_cast<double>(static_cast<std::int64_t>(u));
        }
      }
      return out;
    }
    std::size_t have = 0;
    if (data_type == float32) {
      have = float_data.size();
      out.assign(float_data.begin(), float_data.end());
    } else if (data_type == float64) {
      have = double_data.size();
      out = double_data;
    } else {
      have = int_data.size();
      out.reserve(int_data.size());
      for (const auto v : int_data) out.push_back(static_cast<double>(v));
    }
    if (have != static_cast<std::size_t>(n)) {
      throw ModelFormatError(where + " has " + std::to_string(have) + " values; its shape needs " +
                             std::to_string(n));
    }
    return out;
  }
};

struct Attribute {
  std::string name;
  std::int32_t type = 0;  // AttributeProto.AttributeType: 1 FLOAT, 2 INT, 3 STRING, 4 TENSOR,
                          // 6 FLOATS, 7 INTS
  float f = 0;
  std::int64_t i = 0;
  std::string s;
  std::vector<Tensor> t;  // zero or one
  std::vector<float> floats;
  std::vector<std::int64_t> ints;
  bool has_f = false, has_i = false, has_s = false, has_graph = false, has_ref = false;
};

struct Node {
  std::vector<std::string> inputs, outputs;
  std::string name, op_type, domain;
  std::vector<Attribute> attributes;

  [[nodiscard]] const Attribute* attribute(std::string_view n) const {
    for (const auto& a : attributes) {
      if (a.name == n) return &a;
    }
    return nullptr;
  }
  /// "node 'fc1/Gemm' (Gemm)" or "node 3 (Gemm)" for an unnamed node.
  [[nodiscard]] std::string label(std::size_t index) const {
    return (name.empty() ? "node " + std::to_string(index) : "node '" + name + "'") + " (" +
           op_type + ")";
  }
};

struct ValueInfo {
  std::string name;
  bool is_tensor = false, has_shape = false;
  std::int32_t elem_type = 0;
  std::vector<std::int64_t> dims;  // -1 where the dimension is symbolic or unknown
};

struct Graph {
  std::string name;
  std::vector<Node> nodes;
  std::vector<Tensor> initializers;
  std::vector<ValueInfo> inputs, outputs;
  bool has_sparse = false;
};

struct Model {
  std::int64_t ir_version = 0;
  std::vector<std::pair<std::string, std::int64_t>> opsets;
  std::string producer;
  Graph graph;
  bool has_graph = false;
};

template <class = void>
std::string proto_string(std::string_view v) {
  return std::string(v);
}

template <class = void>
void parse_tensor(pb::Reader& r, Tensor& t) {
  pb::Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        r.read_ints(f, "dims", t.dims);
        break;
      case 2:
        t.data_type = static_cast<std::int32_t>(r.as_int(f, "data_type"));
        break;
      case 4:
        r.read_floats(f, "float_data", t.float_data);
        break;
      case 5:
        r.read_ints(f, "int32_data", t.int_data);
        break;
      case 7:
        r.read_ints(f, "int64_data", t.int_data);
        break;
      case 8:
        t.name = proto_string(r.as_bytes(f, "name"));
        break;
      case 9:
        t.raw_data = r.as_bytes(f, "raw_data");
        t.has_raw = true;
        break;
      case 10:
        r.read_doubles(f, "double_data", t.double_data);
        break;
      case 14:
        t.external = t.external || r.as_int(f, "data_location") == 1;
        break;
      case 13:
        t.external = true;
        break;  // external_data entries
      default:
        break;
    }
  }
}

template <class = void>
void parse_attribute(pb::Reader& r, Attribute& a) {
  pb::Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        a.name = proto_string(r.as_bytes(f, "name"));
        break;
      case 2:
        a.f = r.as_float(f, "f");
        a.has_f = true;
        break;
      case 3:
        a.i = r.as_int(f, "i");
        a.has_i = true;
        break;
      case 4:
        a.s = proto_string(r.as_bytes(f, "s"));
        a.has_s = true;
        break;
      case 5: {
        pb::Reader sub(r.as_bytes(f, "t"), r.what() + " tensor", r.bytes_offset(f));
        a.t.clear();
        a.t.emplace_back();
        parse_tensor(sub, a.t.back());
        break;
      }
      case 6:
      case 11:
        a.has_graph = true;
        break;
      case 7:
        r.read_floats(f, "floats", a.floats);
        break;
      case 8:
        r.read_ints(f, "ints", a.ints);
        break;
      case 20:
        a.type = static_cast<std::int32_t>(r.as_int(f, "type"));
        break;
      case 21:
        a.has_ref = true;
        break;
      default:
        break;
    }
  }
}

template <class = void>
void parse_node(pb::Reader& r, Node& n) {
  pb::Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        n.inputs.push_back(proto_string(r.as_bytes(f, "input")));
        break;
      case 2:
        n.outputs.push_back(proto_string(r.as_bytes(f, "output")));
        break;
      case 3:
        n.name = proto_string(r.as_bytes(f, "name"));
        break;
      case 4:
        n.op_type = proto_string(r.as_bytes(f, "op_type"));
        break;
      case 5: {
        pb::Reader sub(r.as_bytes(f, "attribute"), r.what() + " attribute", r.bytes_offset(f));
        n.attributes.emplace_back();
        parse_attribute(sub, n.attributes.back());
        break;
      }
      case 7:
        n.domain = proto_string(r.as_bytes(f, "domain"));
        break;
      default:
        break;
    }
  }
}

template <class = void>
void parse_value_info(pb::Reader& r, ValueInfo& v) {
  pb::Field f;
  while (r.next(f)) {
    if (f.number == 1) {
      v.name = proto_string(r.as_bytes(f, "name"));
    } else if (f.number == 2) {  // TypeProto
      pb::Reader type(r.as_bytes(f, "type"), r.what() + " type", r.bytes_offset(f));
      pb::Field tf;
      while (type.next(tf)) {
        if (tf.number != 1) continue;  // tensor_type; sequence, map... stay non-tensor
        v.is_tensor = true;
        pb::Reader tensor(type.as_bytes(tf, "tensor_type"), r.what() + " tensor type",
                          type.bytes_offset(tf));
        pb::Field ff;
        while (tensor.next(ff)) {
          if (ff.number == 1) {
            v.elem_type = static_cast<std::int32_t>(tensor.as_int(ff, "elem_type"));
          } else if (ff.number == 2) {  // TensorShapeProto
            v.has_shape = true;
            pb::Reader shape(tensor.as_bytes(ff, "shape"), r.what() + " shape",
                             tensor.bytes_offset(ff));
            pb::Field df;
            while (shape.next(df)) {
              if (df.number != 1) continue;
              pb::Reader dim(shape.as_bytes(df, "dim"), r.what() + " dimension",
                             shape.bytes_offset(df));
              std::int64_t value = -1;
              pb::Field vf;
              while (dim.next(vf)) {
                if (vf.number == 1) value = dim.as_int(vf, "dim_value");
              }
              v.dims.push_back(value < 0 ? -1 : value);
            }
          }
        }
      }
    }
  }
}

template <class = void>
void parse_graph(pb::Reader& r, Graph& g) {
  pb::Field f;
  while (r.next(f)) {
    const auto sub = [&](const char* what) {
      return pb::Reader(r.as_bytes(f, what),
                        std::string("GraphProto ") + what + " " + std::to_string(f.offset),
                        r.bytes_offset(f));
    };
    switch (f.number) {
      case 1: {
        auto nr = sub("node");
        g.nodes.emplace_back();
        parse_node(nr, g.nodes.back());
        break;
      }
      case 2:
        g.name = proto_string(r.as_bytes(f, "name"));
        break;
      case 5: {
        auto tr = sub("initializer");
        g.initializers.emplace_back();
        parse_tensor(tr, g.initializers.back());
        break;
      }
      case 11:
      case 12: {
        auto vr = sub(f.number == 11 ? "input" : "output");
        auto& list = f.number == 11 ? g.inputs : g.outputs;
        list.emplace_back();
        parse_value_info(vr, list.back());
        break;
      }
      case 15:
        g.has_sparse = true;
        break;
      default:
        break;
    }
  }
}

/// Parses a whole ModelProto. Throws ModelFormatError on any malformed field.
template <class = void>
[[nodiscard]] Model parse_model(std::string_view bytes) {
  Model m;
  pb::Reader r(bytes, "ModelProto");
  pb::Field f;
  while (r.next(f)) {
    switch (f.number) {
      case 1:
        m.ir_version = r.as_int(f, "ir_version");
        break;
      case 2:
        m.producer = proto_string(r.as_bytes(f, "producer_name"));
        break;
      case 7: {
        pb::Reader gr(r.as_bytes(f, "graph"), "GraphProto", r.bytes_offset(f));
        m.graph = Graph{};
        parse_graph(gr, m.graph);
        m.has_graph = true;
        break;
      }
      case 8: {
        pb::Reader orr(r.as_bytes(f, "opset_import"), "OperatorSetIdProto", r.bytes_offset(f));
        std::string domain;
        std::int64_t version = 0;
        pb::Field of;
        while (orr.next(of)) {
          if (of.number == 1) domain = proto_string(orr.as_bytes(of, "domain"));
          if (of.number == 2) version = orr.as_int(of, "version");
        }
        m.opsets.emplace_back(std::move(domain), version);
        break;
      }
      default:
        break;
    }
  }
  return m;
}

// ---- writing ---------------------------------------------------------------------

/// A float tensor (raw little-endian data), as an initializer or attribute value.
template <class Values>
[[nodiscard]] pb::Writer float_tensor(std::string_view name, const std::vector<std::int64_t>& dims,
                                      const Values& values) {
  pb::Writer t;
  t.packed_ints(1, dims);
  t.int_field(2, float32);
  t.bytes_field(8, name);
  pb::Writer raw;
  for (const auto v : values) raw.append_float_le(static_cast<float>(v));
  t.bytes_field(9, raw.bytes());
  return t;
}

template <class = void>
[[nodiscard]] pb::Writer int64_tensor(std::string_view name, const std::vector<std::int64_t>& dims,
                                      const std::vector<std::int64_t>& values) {
  pb::Writer t;
  t.packed_ints(1, dims);
  t.int_field(2, int64);
  t.bytes_field(8, name);
  pb::Writer raw;
  for (const auto v : values) raw.append_int64_le(v);
  t.bytes_field(9, raw.bytes());
  return t;
}

/// ValueInfoProto of a float tensor; a dimension of -1 is written as `batch_name`.
template <class = void>
[[nodiscard]] pb::Writer float_value_info(std::string_view name,
                                          const std::vector<std::int64_t>& dims,
                                          std::string_view batch_name) {
  pb::Writer shape;
  for (const auto d : dims) {
    pb::Writer dim;
    if (d < 0) {
      dim.bytes_field(2, batch_name);
    } else {
      dim.int_field(1, d);
    }
    shape.message(1, dim);
  }
  pb::Writer tensor;
  tensor.int_field(1, float32);
  tensor.message(2, shape);
  pb::Writer type;
  type.message(1, tensor);
  pb::Writer v;
  v.bytes_field(1, name);
  v.message(2, type);
  return v;
}

}  // namespace backprop::detail::onnx
