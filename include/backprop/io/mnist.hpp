/// \file
/// \brief Loading MNIST and Fashion-MNIST from their four IDX files, plain or gzip.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <filesystem>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "../data/dataset.hpp"
#include "../errors.hpp"
#include "idx.hpp"

namespace backprop {

/// \brief Number of classes of MNIST and Fashion-MNIST.
inline constexpr int mnist_classes = 10;

/// \brief The two halves of MNIST as shipped: `train` (60000 samples in the real data)
/// and `test` (10000). Samples are columns.
/// \tparam Scalar `float` or `double`.
template <class Scalar>
struct MnistData {
  Dataset<Scalar> train;        ///< inputs rows*cols x N in [0, 1], targets 10 x N one-hot, labels
  Dataset<Scalar> test;         ///< same layout
  Eigen::Index image_rows = 0;  ///< 28 for MNIST
  Eigen::Index image_cols = 0;  ///< 28 for MNIST
};

/// \brief The split used by Nielsen's book: training, validation and test sets.
template <class Scalar>
struct BookSplit {
  Dataset<Scalar> training;    ///< the first `n_training` samples of `train`
  Dataset<Scalar> validation;  ///< the remaining samples of `train` (10000 for MNIST)
  Dataset<Scalar> test;        ///< `test` unchanged
};

namespace detail {

[[noreturn]] inline void throw_mnist(const std::string& problem) {
  throw DataError("load_mnist: " + problem);
}

/// \brief `dir/base` if it exists, else `dir/base.gz`.
/// \throws DataError naming the directory and the missing file name.
[[nodiscard]] inline std::filesystem::path find_mnist_file(const std::filesystem::path& dir,
                                                           const std::string& base) {
  std::error_code ec;
  const std::filesystem::path plain = dir / base;
  if (std::filesystem::exists(plain, ec)) return plain;
  std::filesystem::path gz = dir / (base + ".gz");
  if (std::filesystem::exists(gz, ec)) return gz;
  throw_mnist(dir.string() + ": neither " + base + " nor " + base + ".gz found");
}

/// \brief Images of one file as a (rows*cols) x N matrix scaled to [0, 1].
template <class Scalar>
[[nodiscard]] typename Dataset<Scalar>::Matrix mnist_images(const IdxTensor& t,
                                                            const std::string& name) {
  if (t.type != IdxType::UByte || t.rank() != 3) {
    throw_mnist(name + ": expected images (a rank-3 ubyte IDX file), found a rank-" +
                std::to_string(t.rank()) + " " + idx_type_name(t.type) + " file");
  }
  if (t.dims[0] == 0) throw_mnist(name + ": the file holds no images");
  if (t.dims[1] == 0 || t.dims[2] == 0) {
    throw_mnist(name + ": images of " + std::to_string(t.dims[1]) + "x" +
                std::to_string(t.dims[2]) + " pixels are empty");
  }
  // load_idx capped the data at 2 GiB, so these fit in Eigen::Index.
  const auto n = static_cast<Eigen::Index>(t.dims[0]);
  const auto pixels = static_cast<Eigen::Index>(t.dims[1] * t.dims[2]);
  std::array<Scalar, 256> scale{};
  for (std::size_t v = 0; v < scale.size(); ++v) {
    scale[v] = static_cast<Scalar>(v) / static_cast<Scalar>(255);
  }
  // Image j's pixels are contiguous in the file and form column j of a column-major matrix.
  typename Dataset<Scalar>::Matrix m(pixels, n);
  Scalar* dst = m.data();
  const unsigned char* src = t.bytes.data();
  const std::size_t total = t.bytes.size();
  for (std::size_t k = 0; k < total; ++k) dst[k] = scale[src[k]];
  return m;
}

/// \brief Labels of one file, checked to be in 0..9.
[[nodiscard]] inline Eigen::VectorXi mnist_labels(const IdxTensor& t, const std::string& name) {
  if (t.type != IdxType::UByte || t.rank() != 1) {
    throw_mnist(name + ": expected labels (a rank-1 ubyte IDX file), found a rank-" +
                std::to_string(t.rank()) + " " + idx_type_name(t.type) + " file");
  }
  Eigen::VectorXi labels(static_cast<Eigen::Index>(t.dims[0]));
  for (std::size_t i = 0; i < t.bytes.size(); ++i) {
    const int l = t.bytes[i];
    if (l >= mnist_classes) {
      throw_mnist(name + ": label " + std::to_string(l) + " at index " + std::to_string(i) +
                  " is outside 0.." + std::to_string(mnist_classes - 1));
    }
    labels(static_cast<Eigen::Index>(i)) = l;
  }
  return labels;
}

/// \brief One half of the data set and where its images came from.
template <class Scalar>
struct MnistPart {
  Dataset<Scalar> data;
  std::filesystem::path images_path;
  Eigen::Index rows = 0;
  Eigen::Index cols = 0;
};

/// \brief Loads one half ("train" or "t10k") of the data set.
template <class Scalar>
[[nodiscard]] MnistPart<Scalar> load_mnist_part(const std::filesystem::path& dir,
                                                const std::string& prefix) {
  MnistPart<Scalar> part;
  part.images_path = find_mnist_file(dir, prefix + "-images-idx3-ubyte");
  const std::filesystem::path labels_path = find_mnist_file(dir, prefix + "-labels-idx1-ubyte");
  Dataset<Scalar>& d = part.data;
  {
    const IdxTensor images = load_idx(part.images_path);
    d.inputs = mnist_images<Scalar>(images, part.images_path.string());
    part.rows = static_cast<Eigen::Index>(images.dims[1]);
    part.cols = static_cast<Eigen::Index>(images.dims[2]);
  }
  d.labels = mnist_labels(load_idx(labels_path), labels_path.string());
  if (d.labels.size() != d.inputs.cols()) {
    throw_mnist(part.images_path.string() + " has " + std::to_string(d.inputs.cols()) +
                " images but " + labels_path.string() + " has " + std::to_string(d.labels.size()) +
                " labels");
  }
  d.targets = one_hot<Scalar>(d.labels, mnist_classes);
  return part;
}

/// \brief The directory check, then `load_part("train")` and `load_part("t10k")` (each a
/// `MnistPart<Scalar>`), which must have images of the same size: the shared frame of
/// `load_mnist` and the MPI `load_mnist_shard`.
template <class Scalar, class LoadPart>
MnistData<Scalar> load_mnist_parts(const std::filesystem::path& dir, LoadPart&& load_part) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw_mnist(dir.string() + ": not a directory (expected the four MNIST files in it)");
  }
  MnistPart<Scalar> train = load_part("train");
  MnistPart<Scalar> test = load_part("t10k");
  if (test.rows != train.rows || test.cols != train.cols) {
    throw_mnist(test.images_path.string() + ": images are " + std::to_string(test.rows) + "x" +
                std::to_string(test.cols) + " but the train images (" + train.images_path.string() +
                ") are " + std::to_string(train.rows) + "x" + std::to_string(train.cols));
  }
  MnistData<Scalar> data;
  data.train = std::move(train.data);
  data.test = std::move(test.data);
  data.image_rows = train.rows;
  data.image_cols = train.cols;
  return data;
}

}  // namespace detail

/// \brief Loads MNIST or Fashion-MNIST from a directory.
///
/// Reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
/// and `t10k-labels-idx1-ubyte`, each plain or with a `.gz` suffix (the plain file is used
/// when both exist; compression is detected from the content). The sample counts are
/// taken from the files (60000 and 10000 for the real data sets) and images may have any
/// size, but train and test images must have the same size. Samples are columns.
/// \tparam Scalar `float` or `double`.
/// \param dir the directory holding the four files.
/// \returns `.train` and `.test`: inputs (rows*cols) x N with pixel/255 in [0, 1], targets
///   10 x N one-hot, labels 0..9.
/// \throws DataError (a `std::runtime_error`) naming the file and the problem for a missing
///   file, a malformed or truncated file, a count mismatch between images and labels, a label
///   outside 0..9, or train and test images of different sizes. Nothing is returned
///   partially.
template <class Scalar = float>
[[nodiscard]] MnistData<Scalar> load_mnist(const std::filesystem::path& dir) {
  static_assert(std::is_floating_point_v<Scalar>, "load_mnist<Scalar>: Scalar must be floating");
  return detail::load_mnist_parts<Scalar>(
      dir, [&](const char* prefix) { return detail::load_mnist_part<Scalar>(dir, prefix); });
}

/// \brief Splits MNIST as Nielsen's book does: the first `n_training` train samples for
/// training, the rest of train (the last 10000 of MNIST) for validation, and test as is.
/// \param data loaded data.
/// \param n_training number of training samples (50000 in the book).
/// \returns copies of the three parts.
/// \throws ValueError if `n_training` < 1 or train does not have more than `n_training`
///   samples (the validation set would be empty).
template <class Scalar>
[[nodiscard]] BookSplit<Scalar> book_split(const MnistData<Scalar>& data,
                                           Eigen::Index n_training = 50000) {
  const Eigen::Index n = data.train.size();
  if (n_training < 1 || n <= n_training) {
    throw ValueError("book_split: cannot take " + std::to_string(n_training) +
                     " training samples and a non-empty validation set from " + std::to_string(n) +
                     " train samples");
  }
  BookSplit<Scalar> out;
  out.training = data.train.slice(0, n_training);
  out.validation = data.train.slice(n_training, n - n_training);
  out.test = data.test;
  return out;
}

}  // namespace backprop
