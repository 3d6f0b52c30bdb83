"""``python -m emulators.mailchimp [--port N]`` serves the Mailchimp emulator on 127.0.0.1."""

from emulators.common import main
from emulators.mailchimp import MailchimpEmulator

if __name__ == "__main__":
    main(MailchimpEmulator)
