/// \file
/// \brief The model-file members of `BasicNetwork` (`save`/`load` in backprop's binary
/// format, `save_json`/`load_json` in network2.py's JSON, `save_onnx`/`load_onnx`), as a
/// base class the network derives from.
#pragma once

#include <filesystem>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>

#include "../costs/costs.hpp"
#include "json.hpp"
#include "model.hpp"
#include "onnx.hpp"

namespace backprop {

/// \brief The model-file members of a network: `BasicNetwork` derives from
/// `ModelFiles<BasicNetwork<...>>` (each format's code is in io/model.hpp, io/json.hpp
/// and io/onnx.hpp).
/// \tparam Net the network class deriving from it
template <class Net>
class ModelFiles {
 public:
  /// \brief Saves the parameters in backprop's binary model format (docs/model-format.md:
  /// layer shapes, activations, scalar type, CRC-32), atomically: a temporary file in
  /// the same directory is written, fsync'ed and renamed over `path`, so `path` holds
  /// the old file or the complete new one, never a half-written one.
  /// \param path the file to create or replace
  /// \throws std::runtime_error naming `path` if it cannot be written (an existing
  ///         file is then left as it was); ValueError if a parameter is not finite;
  ///         ShapeError if a parameter matrix was resized away from its layer's shape
  void save(const std::filesystem::path& path) const {
    detail::save_to_path(path, [this](std::ostream& os) { detail::save_binary(self(), os); });
  }

  /// \brief Writes the binary model format to `os` (open it in binary mode).
  /// \throws std::runtime_error if the stream fails; ValueError if a parameter is not
  ///         finite; ShapeError if a parameter matrix was resized
  void save(std::ostream& os) const { detail::save_binary(self(), os); }

  /// \brief Loads parameters saved by `save`. The file must record this network's
  /// layer shapes and activations; a file of the other scalar type is converted
  /// (float to double exactly; double to float rounded, out-of-range values rejected).
  /// Strong guarantee: on any error the network is unchanged.
  /// \throws ModelFormatError naming `path` and the problem: cannot open, not a model,
  ///         unsupported version, different architecture (both sides named), truncated,
  ///         checksum mismatch, trailing bytes, non-finite values
  void load(const std::filesystem::path& path) {
    detail::load_from_path(path, [this](std::istream& is) { detail::load_binary(self(), is); });
  }

  /// \brief Loads a model written by `save(std::ostream&)`; it must extend to the end of
  /// the stream. Strong guarantee.
  /// \throws ModelFormatError as `load(path)`, without the file name
  void load(std::istream& is) { detail::load_binary(self(), is); }

  /// \brief Saves the JSON of network2.py's `save` ("sizes", "weights", "biases",
  /// "cost"; plus "activations" if a layer is not a sigmoid), atomically like `save`.
  /// Numbers have 17 significant digits, so loading gives back the exact parameters.
  /// All-`Dense` networks only.
  /// \param path the file to write
  /// \param cost_name the "cost" entry, network2's cost class name
  /// \throws std::runtime_error naming `path` if it cannot be written (an existing
  ///         file is then left as it was); ValueError if a parameter is not finite;
  ///         ShapeError if a parameter matrix was resized away from its layer's shape
  void save_json(const std::filesystem::path& path,
                 std::string_view cost_name = QuadraticCost::name) const {
    detail::save_to_path(
        path, [this, cost_name](std::ostream& os) { detail::save_json(self(), os, cost_name); });
  }

  /// \brief Writes network2.py's JSON to `os`.
  void save_json(std::ostream& os, std::string_view cost_name = QuadraticCost::name) const {
    detail::save_json(self(), os, cost_name);
  }

  /// \brief Loads a network2.py JSON model. "sizes" must equal this network's sizes;
  /// "activations", if present, must match (network2's files have none: every layer
  /// is a sigmoid there, and the activations are then not checked). Strong guarantee.
  /// \returns the file's "cost" (e.g. "CrossEntropyCost"), or "" if it has none
  /// \throws ModelFormatError naming `path` and the problem (line and column for
  ///         syntax errors; both sides for size mismatches)
  std::string load_json(const std::filesystem::path& path) {
    return detail::load_from_path(
        path, [this](std::istream& is) { return detail::load_json(self(), is); });
  }

  /// \brief Loads a network2.py JSON model from the rest of `is`. Strong guarantee.
  std::string load_json(std::istream& is) { return detail::load_json(self(), is); }

  /// \brief Saves the network as an ONNX model (io/onnx.hpp: IR 8, opset 13) that ONNX
  /// Runtime runs: float input "input" [N, inputs] (or [N, C, H, W] when the first layer
  /// takes an image), float output "output" [N, outputs] equal to `feedforward`.
  /// Atomic like `save`; parameters are written as float.
  /// \throws std::runtime_error naming `path` if it cannot be written; ValueError if a
  ///         parameter is not finite; ShapeError if a parameter matrix was resized
  void save_onnx(const std::filesystem::path& path) const {
    detail::save_to_path(path, [this](std::ostream& os) { detail::onnx::save_onnx(self(), os); });
  }
  /// \brief Writes the ONNX model to `os` (binary mode).
  void save_onnx(std::ostream& os) const { detail::onnx::save_onnx(self(), os); }

  /// \brief Loads an ONNX model of this architecture, e.g. what `torch.onnx.export`
  /// writes for a `torch.nn.Sequential` of the same layers (io/onnx.hpp lists the
  /// operators read). A LogSoftmax output is read as this network's Softmax. Strong
  /// guarantee: on any error the network is unchanged.
  /// \throws ModelFormatError naming `path`, the node, its operator and what the layer
  ///         expected; or the problem of a truncated or corrupted file
  void load_onnx(const std::filesystem::path& path) {
    detail::load_from_path(path, [this](std::istream& is) { load_onnx(is); });
  }
  /// \brief Loads an ONNX model from the rest of `is`. Strong guarantee.
  void load_onnx(std::istream& is) {
    const std::string bytes = detail::onnx::read_all(is);
    detail::onnx::load_onnx(self(), bytes);
  }

 protected:
  ModelFiles() = default;

 private:
  [[nodiscard]] const Net& self() const { return static_cast<const Net&>(*this); }
  [[nodiscard]] Net& self() { return static_cast<Net&>(*this); }
};

}  // namespace backprop
