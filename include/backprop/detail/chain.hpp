/// \file
/// \brief The compile-time checks of a layer chain (internal): every layer satisfies the
/// `Layer` concept, adjacent sizes match, the output layer can compute the cost; and
/// the detection of a layer object's optional members.
#pragma once

#include <concepts>
#include <cstddef>
#include <tuple>
#include <utility>

#include "../concepts.hpp"
#include "../init/initializers.hpp"
#include "../init/random.hpp"

namespace backprop::detail {

/// Compile-time check of one link of the layer chain. Instantiated with the
/// link's index and both sizes so they appear in the compiler's diagnostic.
template <std::size_t LayerIndex, int PreviousOutputs, int LayerInputs>
struct LayerSizesMustMatch {
  static_assert(PreviousOutputs == LayerInputs,
                "backprop::Network: layer sizes do not match: the outputs of layer "
                "LayerIndex - 1 (PreviousOutputs) must equal the inputs of layer LayerIndex "
                "(LayerInputs); see the template arguments of LayerSizesMustMatch below");
  static constexpr bool value = true;
};

/// As `LayerSizesMustMatch`, when the previous layer produces an image (Conv2D,
/// MaxPool2D): names its shape and size.
template <std::size_t LayerIndex, int Channels, int Height, int Width, int PreviousOutputs,
          int LayerInputs>
struct LayerShapesMustMatch {
  static_assert(PreviousOutputs == LayerInputs,
                "backprop::Network: layer sizes do not match: layer LayerIndex - 1 produces "
                "Channels x Height x Width = PreviousOutputs values, layer LayerIndex expects "
                "LayerInputs; see the template arguments of LayerShapesMustMatch below");
  static constexpr bool value = true;
};

/// As `LayerSizesMustMatch`, when the layer reads an image: names its shape and size.
template <std::size_t LayerIndex, int PreviousOutputs, int Channels, int Height, int Width,
          int LayerInputs>
struct LayerInputShapeMustMatch {
  static_assert(PreviousOutputs == LayerInputs,
                "backprop::Network: layer sizes do not match: layer LayerIndex - 1 produces "
                "PreviousOutputs values, layer LayerIndex expects an image of Channels x Height "
                "x Width = LayerInputs; see the template arguments of LayerInputShapeMustMatch "
                "below");
  static constexpr bool value = true;
};

/// Two image layers in a row: the shapes must be equal, not only their sizes.
template <std::size_t LayerIndex, int PreviousChannels, int PreviousHeight, int PreviousWidth,
          int Channels, int Height, int Width>
struct ImageShapesMustMatch {
  static_assert(PreviousChannels == Channels && PreviousHeight == Height && PreviousWidth == Width,
                "backprop::Network: image shapes do not match: layer LayerIndex - 1 produces "
                "PreviousChannels x PreviousHeight x PreviousWidth, layer LayerIndex expects "
                "Channels x Height x Width; see the template arguments of ImageShapesMustMatch "
                "below");
  static constexpr bool value = true;
};

template <class L>
concept HasOutputShape = requires {
  typename L::output_shape;
};
template <class L>
concept HasInputShape = requires {
  typename L::input_shape;
};

/// The check of the link from layer I - 1 (Prev) to layer I (Next).
template <std::size_t I, class Prev, class Next>
constexpr bool check_link() {
  if constexpr (HasOutputShape<Prev>) {
    using S = typename Prev::output_shape;
    constexpr bool sizes = LayerShapesMustMatch<I, S::channels, S::height, S::width, Prev::outputs,
                                                Next::inputs>::value;
    if constexpr (HasInputShape<Next> && Prev::outputs == Next::inputs) {
      using T = typename Next::input_shape;
      return sizes && ImageShapesMustMatch<I, S::channels, S::height, S::width, T::channels,
                                           T::height, T::width>::value;
    } else {
      return sizes;
    }
  } else if constexpr (HasInputShape<Next>) {
    using T = typename Next::input_shape;
    return LayerInputShapeMustMatch<I, Prev::outputs, T::channels, T::height, T::width,
                                    Next::inputs>::value;
  } else {
    return LayerSizesMustMatch<I, Prev::outputs, Next::inputs>::value;
  }
}

template <class Tuple, std::size_t... I>
constexpr bool check_chain(std::index_sequence<I...>) {
  return (check_link<I + 1, std::tuple_element_t<I, Tuple>, std::tuple_element_t<I + 1, Tuple>>() &&
          ... && true);
}

template <class T>
struct LayerMustSatisfyLayerConcept {
  static_assert(Layer<T>,
                "backprop::Network<Layers...>: every layer must satisfy backprop::Layer "
                "(e.g. backprop::Dense<In, Out, Activation>; see docs/layers.md)");
  static constexpr bool value = true;
};

template <class T>
struct OutputLayerMustComputeTheCost {
  static_assert(
      requires { typename T::activation; },
      "backprop::Network: the output layer must have an activation and the "
      "members backward_cost and cost (as Dense has; see docs/layers.md)");
  static constexpr bool value = true;
};

/// The optional members of a layer object, detected (by type: a requires-expression on
/// `layer<i>()` with a lambda's `i` is not a constant expression for clang 14).
template <class T>
concept InitializesBiases = requires(T& l, Rng& rng, Init init) {
  l.initialize_biases(rng, init);
};
template <class T>
concept InitializesWeights = requires(T& l, Rng& rng, Init init) {
  l.initialize_weights(rng, init);
};
template <class T>
concept ChecksLiveParameters = requires(const T& l, const typename T::Workspace& ws) {
  { l.parameters_finite(ws) } -> std::convertible_to<bool>;
};
template <class T>
concept AbandonsEpoch = requires(typename T::Workspace& ws) {
  T::abandon_epoch(ws);
};
template <class T>
concept HasSamplePath = requires {
  typename T::SampleState;
};
template <class T>
concept HasEpochHooks = requires(T& l, typename T::Workspace& ws) {
  l.begin_epoch(ws, true);
  l.end_epoch(ws);
};

}  // namespace backprop::detail
