// docs/training.md: a classifier trained end to end with the options of a real run, on
// data made up on the spot (points inside or outside a circle).
#include <backprop/backprop.hpp>
#include <cstdint>
#include <iostream>

namespace bp = backprop;

// n points uniform in [-1, 1]^2; class 1 inside the circle of radius 0.7. Samples are
// columns: inputs is 2 x n, targets (one-hot) 2 x n, labels n.
bp::Dataset<float> circle(int n, std::uint64_t seed) {
  bp::Rng rng(seed);
  bp::Dataset<float> data;
  data.inputs.resize(2, n);
  data.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    const double x = rng.uniform(-1.0, 1.0);
    const double y = rng.uniform(-1.0, 1.0);
    data.inputs(0, i) = static_cast<float>(x);
    data.inputs(1, i) = static_cast<float>(y);
    data.labels(i) = x * x + y * y < 0.49 ? 1 : 0;
  }
  data.targets = bp::one_hot<float>(data.labels, 2);
  return data;
}

int main() {
  using Net = bp::Network<bp::Dense<2, 32, bp::ReLU>, bp::Dense<32, 32, bp::ReLU>,
                          bp::Dense<32, 2, bp::Softmax>>;
  Net net{1, bp::Init::he};  // the seed fixes the initial parameters and the shuffling
  const auto training = circle(2000, 2);
  const auto validation = circle(500, 3);

  // Adam, softmax + log-likelihood, a cosine schedule, early stopping on the validation
  // accuracy (keeping the best epoch's parameters), the training cost monitored.
  const bp::TrainingHistory history =
      net.sgd<bp::LogLikelihoodCost>(training,
                                     {.epochs = 40,
                                      .mini_batch_size = 20,
                                      .eta = 0.005,
                                      .monitor_training_cost = true,
                                      .on_epoch = bp::quiet,
                                      .early_stopping_patience = 10,
                                      .schedule = bp::Schedule::cosine()},
                                     &validation, bp::Adam{});

  const auto& first = history.epochs.front();
  const auto& last = history.epochs.back();
  std::cout << history.epochs.size() << " epochs; training cost " << *first.training_cost << " -> "
            << *last.training_cost << "; best validation accuracy in epoch " << history.best_epoch
            << '\n';

  // Inference: one sample (a column) or a batch (one column each).
  const Eigen::Vector2f centre(0.0f, 0.0f);
  const Eigen::Vector2f probabilities = net.feedforward(centre);
  const long long correct = net.evaluate(validation.inputs, validation.labels);
  std::cout << "P(inside | centre) = " << probabilities(1) << "; validation accuracy " << correct
            << " / " << validation.size() << '\n';
  return correct >= 475 && probabilities(1) > 0.9f ? 0 : 1;
}
