"""Seed 002's Keras code (its Define / Compile / Train listing), run on fastnn with only the
import line changed, on the bundled digits (the notes' own data is not shipped).

    python examples/keras_seed002.py          (needs scikit-learn, which ships the digits data)

The listing, as the notes write it, between the two rulers below: Keras' Sequential().add,
Dense(units=, input_shape=, activation=, name=), a softmax output trained with
'sparse_categorical_crossentropy' (fastnn folds the softmax into its stable fused loss, as
Keras does), optimizers.Adam(lr=...), fit(..., validation_data=...) returning a History.
"""
from fastnn import Dense, Sequential, optimizers  # was: from keras... import ...
from fastnn.datasets import load_digits, train_test_split


def main():
    x, y = load_digits()
    Xtr, Xts, ytr, yts = train_test_split(x / 16.0, y, test_fraction=0.25, seed=0)
    nin, nh, nout = Xtr.shape[1], 100, 10

    # ------------------------------------------------------------ seed 002, unchanged
    model = Sequential()
    model.add(Dense(units=nh, input_shape=(nin,), activation='sigmoid', name='hidden'))
    model.add(Dense(units=nout, activation='softmax', name='output'))

    opt = optimizers.Adam(lr=0.001)
    model.compile(optimizer=opt,
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])

    hist = model.fit(Xtr, ytr, epochs=30, batch_size=100, validation_data=(Xts,yts))
    # ------------------------------------------------------------

    model.summary()
    print(f"validation accuracy after {len(hist.epoch)} epochs: "
          f"{hist.history['val_accuracy'][-1]:.3f}")
    return hist


if __name__ == "__main__":
    main()
